"""``SegFix``: the user-facing model. Load it, hand it an image and any model's label map, get the refined map.

>>> from segfix import SegFix                                      # doctest: +SKIP
>>> model = SegFix.from_pretrained("camvid-lite0")                 # doctest: +SKIP
>>> refined = model.refine(image, label_map)                       # doctest: +SKIP

Images are ``(H, W, 3)`` uint8 numpy arrays or PIL images (RGB), lists or ``(N, H, W, 3)`` stacks of them,
or torch tensors ``(3, H, W)`` / ``(N, 3, H, W)`` (float in [0, 1], or uint8), on any device. Normalisation
(channel order, mean, std) is part of the model's config. Outputs follow the input: numpy in, numpy out;
tensors in, tensors out on the input's device.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, overload

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from PIL import Image
from torch import nn

from ._checks import check_positive_int, check_scale, describe
from .directions import direction_to_offset, flip_direction
from .inference import predict_sliding, predict_whole
from .network import SegFixNet
from .pretrained import BUNDLED_MODELS, bundled_model_dir, hub_reachable, list_models
from .refine import refine_instances, refine_semantic
from .vote import vote_labels

__all__ = ["ModelLoadError", "Prediction", "SegFix"]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_MODEL_CARD = """---
{{ card_data }}
---

# SegFix offset predictor

A [SegFix](https://arxiv.org/abs/2007.04269) boundary/direction network saved with the
[`segfix-pytorch`](https://pypi.org/project/segfix-pytorch/) library. Load it and refine any segmentation:

```python
from segfix import SegFix
model = SegFix.from_pretrained("{{ repo_id | default('path/to/model', true) }}")
refined = model.refine(image, label_map)
```
"""


class ModelLoadError(ValueError):
    """A model folder, cache entry or file could not be loaded; the message says why and how to fix it."""


ImageInput: TypeAlias = "np.ndarray | torch.Tensor | Image.Image | Sequence[np.ndarray | torch.Tensor | Image.Image]"
"""What the image argument of :meth:`SegFix.predict` and :meth:`SegFix.refine` takes: one RGB image ``(H, W, 3)``
uint8 (numpy, PIL) or ``(3, H, W)`` float in [0, 1] (torch), a batch, or a list of images."""


@dataclass(repr=False)
class Prediction:
    """Dense SegFix predictions at image resolution.

    Attributes:
        boundary_prob: float32 ``(H, W)`` or ``(N, H, W)``, probability that a pixel is on a boundary.
        direction: int64 ``(H, W)`` or ``(N, H, W)``, argmax direction class.
        boundary: bool, the pixels that may move: ``boundary_prob > boundary_threshold`` (and, with a
            ``direction_threshold`` and no ``direction_vote``, a confident direction).
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


class SegFix(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="segfix",
    license="mit",
    tags=["segfix", "boundary-refinement", "image-segmentation"],
    repo_url="https://github.com/segfix-pytorch/segfix-pytorch",
    docs_url="https://github.com/segfix-pytorch/segfix-pytorch/tree/main/docs",
    model_card_template=_MODEL_CARD,
):
    """SegFix network plus its preprocessing and inference settings (everything in ``config.json``).

    Network arguments are those of :class:`segfix.network.SegFixNet`. The rest:

    Args:
        mean: per-channel mean of images scaled to [0, 1], in ``channel_order``.
        std: per-channel standard deviation, likewise.
        channel_order: ``'RGB'``, or ``'BGR'`` for the original's checkpoints (images are flipped to BGR, then
            normalised with ``mean``/``std`` in that order).
        boundary_threshold: a pixel is boundary when its boundary probability exceeds this.
        direction_threshold: confidence-aware offsets: a boundary pixel moves only when the probability behind
            its move exceeds this (0 = always, as the original): that of its argmax direction, or with
            ``direction_vote`` the pooled probability of the winning label.
        direction_vote: :meth:`refine` gives each boundary pixel the label that most of its direction probability
            points at (:func:`segfix.vote_labels`) instead of following the argmax direction; offsets
            (:meth:`predict_offsets`, instance refinement) stay argmax.
        semantic_scale: offset scale for :meth:`refine` (2 in the paper).
        instance_scale: offset scale for :meth:`refine_instances` (1 in the paper).
        iterations: steps along the offset field (see :func:`segfix.shift_labels`).
        inference: ``'whole'``, ``'sliding'`` or ``'auto'`` (whole image up to ``max_whole_pixels``).
        window_size: sliding-window size (h, w) or one int.
        window_stride: sliding-window stride; default two thirds of the window.
        max_whole_pixels: larger images use sliding windows under ``'auto'`` (bounds memory).
        input_scale: resize images by this factor before the network (predictions return to full size).
        min_short_side: then enlarge images whose shorter side is still below this many pixels until it reaches
            it (at most 4x in all; 0 = off). A model trained on small frames sees thin structures a few pixels
            wide better at twice the size, while large frames, already that size, keep their cost.
        precision: ``'auto'`` (bf16 autocast on CUDA and on CPUs with bf16 instructions, fp32 elsewhere: see
            :mod:`segfix.precision`), ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        flip_tta: also run the mirrored image and average (directions remapped), at twice the cost.
        ignore_index: label never moved or created by :meth:`refine`.

    Attributes set by :meth:`from_pretrained` (None on a new model): ``weights_dtype``, the floating dtype
    the weights file stored, which :meth:`save_pretrained` keeps (set it to ``torch.float32`` to save full
    precision); ``source_card``, the loaded folder's model card, which :meth:`save_pretrained` writes again
    so that the weights keep their licence.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

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
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        channel_order: str = "RGB",
        boundary_threshold: float = 0.5,
        direction_threshold: float = 0.0,
        semantic_scale: int = 2,
        instance_scale: int = 1,
        iterations: int = 1,
        inference: str = "auto",
        window_size: int | Sequence[int] = 1024,
        window_stride: int | Sequence[int] | None = None,
        max_whole_pixels: int = 4 * 1024 * 1024,
        input_scale: float = 1.0,
        min_short_side: int = 0,
        precision: str = "auto",
        flip_tta: bool = False,
        direction_vote: bool = False,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__()
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order: expected 'RGB' or 'BGR', got {channel_order!r}")
        if inference not in ("auto", "whole", "sliding"):
            raise ValueError(f"inference: expected 'auto', 'whole' or 'sliding', got {inference!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean/std: expected 3 values each (std > 0), got mean={mean!r}, std={std!r}")
        if not 0 < input_scale <= 4:
            raise ValueError(f"input_scale: expected a factor in (0, 4], got {input_scale!r}")
        if isinstance(min_short_side, bool) or not isinstance(min_short_side, int) or not 0 <= min_short_side <= 16384:
            raise ValueError(
                f"min_short_side: expected an integer number of pixels in [0, 16384], got {min_short_side!r}"
            )
        _check_settings(
            boundary_threshold=boundary_threshold,
            direction_threshold=direction_threshold,
            semantic_scale=semantic_scale,
            instance_scale=instance_scale,
            iterations=iterations,
            window_size=window_size,
            window_stride=window_stride,
            max_whole_pixels=max_whole_pixels,
            precision=precision,
            ignore_index=ignore_index,
        )
        self.net = SegFixNet(
            backbone=backbone,
            out_indices=out_indices,
            decoder=decoder,
            decoder_channels=decoder_channels,
            head_channels=head_channels,
            head_kernel_size=head_kernel_size,
            head_activation=head_activation,
            num_directions=num_directions,
            align_corners=align_corners,
            backbone_kwargs=backbone_kwargs,
            backbone_upsample=backbone_upsample,
        )
        # channels-last convolutions were 1.4x faster on the CPU (and are the fast layout on GPUs)
        self.net.to(memory_format=torch.channels_last)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.channel_order = channel_order
        self.num_directions = num_directions
        self.align_corners = align_corners
        self.boundary_threshold = boundary_threshold
        self.direction_threshold = direction_threshold
        self.semantic_scale = semantic_scale
        self.instance_scale = instance_scale
        self.iterations = iterations
        self.inference = inference
        self.window_size = _pair(window_size)
        self.window_stride = (
            _pair(window_stride) if window_stride is not None else _pair([max(1, 2 * w // 3) for w in self.window_size])
        )
        self.max_whole_pixels = max_whole_pixels
        self.input_scale = input_scale
        self.min_short_side = min_short_side
        self.precision = precision
        self.flip_tta = flip_tta
        self.direction_vote = direction_vote
        self.ignore_index = ignore_index
        # Set by from_pretrained: save_pretrained keeps the file's weight dtype and model card (licence).
        self.weights_dtype: torch.dtype | None = None
        self.source_card: str | None = None

    # ------------------------------------------------------------------ basics

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def config(self) -> dict:
        """The constructor arguments, as written to ``config.json``."""
        config = self._hub_mixin_config
        return dict(config) if isinstance(config, dict) else {}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` -> (boundary logits, direction logits) at the network's stride."""
        return self.net(images)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Float RGB images in [0, 1] ``(N, 3, H, W)`` -> the network's input (channel order, mean, std)."""
        if self.channel_order == "BGR":
            images = images.flip(1)
        return (images - self.pixel_mean) / self.pixel_std

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def predict(self, image: ImageInput, *, inference: str | None = None, direction_prob: bool = False) -> Prediction:
        """Boundary probability and direction class per pixel, at image resolution.

        Args:
            image: one image or a batch (see the module docstring).
            inference: override the config's ``'auto'`` / ``'whole'`` / ``'sliding'``.
            direction_prob: also return the direction probabilities (D floats per pixel).

        Returns:
            A :class:`Prediction`: ``(H, W)`` maps for one image, ``(N, H, W)`` for a batch; numpy for numpy/PIL
            input, torch tensors on the input's device for tensor input.
        """
        batch, single, as_numpy, out_device = self._to_batch(image)
        parts: list[list[torch.Tensor]] = [[], [], [], []] if direction_prob else [[], [], []]
        for group in batch:
            prob, logits = self._dense(group, inference or self.inference)
            # In place: at 4096x8192 the (N, 8, H, W) volume is 1 GiB, and the logits are not needed after
            # (the argmax of the probabilities is that of the logits).
            softmax = torch.softmax(logits, 1, out=logits) if direction_prob else None
            decided = self.decide(prob, logits, softmax)
            for part, x in zip(parts, (*decided, *([softmax] if softmax is not None else []))):
                part.append(x)
        return Prediction(*(_finish(_stack_or_list(x), single, as_numpy, out_device) for x in parts))

    @torch.inference_mode()
    def dense(self, image: ImageInput, *, inference: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's dense outputs at image resolution, before any decision, with this model's inference
        settings (input scale, flip averaging, whole image or windows).

        Args:
            image: one image, or a batch of images of one size (see the module docstring).

        Returns:
            (boundary probability ``(N, H, W)``, direction logits ``(N, D, H, W)``), float32 on the model's device.
        """
        batch, *_ = self._to_batch(image)
        if len(batch) != 1:
            sizes = sorted({tuple(b.shape[-2:]) for b in batch})
            raise ValueError(f"dense: expected one image or images of one size, got sizes {sizes}")
        return self._dense(batch[0], inference or self.inference)

    def decide(
        self, prob: torch.Tensor, logits: torch.Tensor, direction_prob: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decision step: (boundary prob, direction class, pixels that may move) from :meth:`dense`'s outputs,
        by ``boundary_threshold`` and ``direction_threshold``; ``direction_prob`` is ``logits.softmax(1)`` when
        the caller already has it. Shapes ``(N, H, W)`` each."""
        direction = logits.argmax(1)
        moving = prob > self.boundary_threshold
        if self.direction_threshold > 0 and not self.direction_vote:
            if direction_prob is None:
                direction_prob = logits.softmax(1)
            moving &= direction_prob.amax(1) > self.direction_threshold
        return prob, direction, moving

    @torch.inference_mode()
    def predict_offsets(self, image: ImageInput, *, inference: str | None = None) -> Any:
        """Integer offsets ``(2, H, W)`` (or ``(N, 2, H, W)``), int8, channel order ``(dy, dx)``, unscaled,
        zero off the predicted boundary."""
        batch, single, as_numpy, out_device = self._to_batch(image)
        offsets = []
        for group in batch:
            _, direction, moving = self.decide(*self._dense(group, inference or self.inference))
            offsets.append(direction_to_offset(direction, moving, num_directions=self.num_directions))
        return _finish(_stack_or_list(offsets), single, as_numpy, out_device)

    @overload
    def refine(
        self,
        image: ImageInput,
        label_map: np.ndarray,
        *,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ) -> np.ndarray: ...
    @overload
    def refine(
        self,
        image: ImageInput,
        label_map: torch.Tensor,
        *,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ) -> torch.Tensor: ...
    @overload
    def refine(
        self,
        image: ImageInput,
        label_map: list[np.ndarray],
        *,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ) -> list[np.ndarray]: ...
    @overload
    def refine(
        self,
        image: ImageInput,
        label_map: list[torch.Tensor],
        *,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ) -> list[torch.Tensor]: ...
    def refine(
        self,
        image: ImageInput,
        label_map: Any,
        *,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ) -> Any:
        """Refine a semantic label map predicted by any model for ``image``.

        Args:
            image: the RGB image the label map was predicted from (or a batch, or a list of images).
            label_map: integer ``(H, W)`` (or ``(N, H, W)`` for a batch), numpy or torch, same size as the image;
                or a list of maps, one per image (what ``post_process_semantic_segmentation`` returns).
                Logits are refused with a hint: pass ``logits.argmax(dim)``.
            scale: offset scale; default ``semantic_scale`` from the config (2).
            iterations: steps along the field; default from the config (1).

        Returns:
            The refined label map: same type, dtype, shape (and device) as ``label_map``; a list for a list.
        """
        if isinstance(label_map, (list, tuple)):
            return self._refine_each(image, label_map, scale=scale, iterations=iterations, inference=inference)
        if self.direction_vote:
            _require_array(label_map, "label_map")
            self._steps(scale, iterations, self.semantic_scale)  # refuse bad values before the network runs
            prediction = self.predict(image, inference=inference, direction_prob=True)
            moving = prediction.boundary
            self._check_labels(label_map, moving, batched=not isinstance(moving, list) and moving.ndim == 3)
            return self.refine_prediction(prediction, label_map, scale=scale, iterations=iterations)
        scale, iterations = self._steps(scale, iterations, self.semantic_scale)
        offsets = self._offsets_for(image, label_map, inference)
        return refine_semantic(label_map, offsets, scale=scale, iterations=iterations, ignore_index=self.ignore_index)

    def _refine_each(self, images, label_maps, **kwargs) -> list:
        if not all(isinstance(m, (np.ndarray, torch.Tensor)) for m in label_maps):
            kinds = sorted({type(m).__name__ for m in label_maps})
            raise TypeError(
                f"label_map: expected a numpy.ndarray or torch.Tensor (or a list of them, one per image), "
                f"got a list of {kinds}"
            )
        batched = isinstance(images, (list, tuple)) or (getattr(images, "ndim", 0) == 4)
        each = list(images) if batched else [images]
        if len(each) != len(label_maps):
            raise ValueError(
                f"label_map: got a list of {len(label_maps)} maps for {len(each)} images; pass one per image"
            )
        return [self.refine(img, m, **kwargs) for img, m in zip(each, label_maps)]

    def refine_prediction(
        self,
        prediction: Prediction,
        label_map,
        *,
        scale: int | None = None,
        iterations: int | None = None,
        ignore_index: int | None | str = "config",
    ):
        """Refine ``label_map`` with an existing :meth:`predict` result (no network pass), by this model's rule.

        ``prediction`` must hold ``direction_prob`` when ``direction_vote`` is set. Shapes as :meth:`refine`;
        ``ignore_index`` defaults to the config's.
        """
        scale, steps = self._steps(scale, iterations, self.semantic_scale)
        ignore = self.ignore_index if ignore_index == "config" else ignore_index
        if isinstance(ignore, str):
            raise ValueError(f"ignore_index: expected an integer, None or 'config', got {ignore!r}")
        if self.direction_vote and prediction.direction_prob is None:
            raise ValueError("refine_prediction: direction_vote needs predict(..., direction_prob=True)")
        fields = [prediction.boundary, prediction.direction_prob if self.direction_vote else prediction.direction]
        if isinstance(label_map, torch.Tensor):
            fields = [torch.as_tensor(f, device=label_map.device) for f in fields]
        else:
            fields = [f.cpu().numpy() if isinstance(f, torch.Tensor) else f for f in fields]
        moving, field = fields
        if label_map.ndim == 3 and moving.ndim == 2:  # one image, its map given as (1, H, W)
            moving, field = moving[None], field[None]
        if not self.direction_vote:
            offsets = direction_to_offset(field, moving, num_directions=self.num_directions)
            return refine_semantic(label_map, offsets, scale=scale, iterations=steps, ignore_index=ignore)
        refined = label_map
        for _ in range(steps):
            refined = vote_labels(
                refined, field, moving, scale=scale, min_share=self.direction_threshold, ignore_index=ignore
            )
        return refined

    def _steps(self, scale: Any, iterations: Any, default_scale: int) -> tuple[int, int]:
        """The scale and iterations to use: the caller's (validated) or the config's, never a silent swap."""
        scale = default_scale if scale is None else check_scale(scale)
        if iterations is None:
            return scale, self.iterations
        check_positive_int(iterations, "iterations")
        return scale, int(iterations)

    @staticmethod
    def _check_labels(labels, field, *, batched: bool, instance: bool = False) -> None:
        """``labels`` against a per-pixel ``field`` predicted for the images (a list when their sizes differ):
        same size; one map per image."""
        if isinstance(field, list):
            raise ValueError("refine: images of different sizes need one call each (or one batch of equal sizes)")
        image_size = field.shape[-2:]
        batch = field.shape[0] if batched else None
        if tuple(image_size) != tuple(labels.shape[-2:]):
            raise ValueError(
                f"label map size {tuple(labels.shape[-2:])} does not match the image size "
                f"{tuple(image_size)}; resize the label map to the image (nearest neighbour)"
            )
        if instance:
            if batch is not None:
                raise ValueError("refine_instances: expected one image for a stack of masks, got a batch")
            return
        if labels.ndim == 3 and batch is None and labels.shape[0] != 1:
            raise ValueError(f"label_map: got {labels.shape[0]} maps for one image; pass a batch of images")
        if labels.ndim == 2 and batch is not None:
            raise ValueError(f"label_map: got one map {tuple(labels.shape)} for a batch of {batch} images")

    def refine_instances(
        self,
        image,
        masks,
        *,
        scores=None,
        resolve_overlaps: bool = False,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ):
        """Refine instance masks ``(K, H, W)`` predicted for one ``image`` with one offset field."""
        scale, iterations = self._steps(scale, iterations, self.instance_scale)
        offsets = self._offsets_for(image, masks, inference, instance=True)
        return refine_instances(
            masks,
            offsets,
            scale=scale,
            iterations=iterations,
            scores=scores,
            resolve_overlaps=resolve_overlaps,
        )

    def _offsets_for(self, image, labels, inference, *, instance: bool = False):
        _require_array(labels, "masks" if instance else "label_map")
        offsets = self.predict_offsets(image, inference=inference)
        self._check_labels(
            labels, offsets, batched=not isinstance(offsets, list) and offsets.ndim == 4, instance=instance
        )
        if isinstance(labels, torch.Tensor):
            offsets = (
                offsets.to(labels.device)
                if isinstance(offsets, torch.Tensor)
                else torch.from_numpy(offsets).to(labels.device)
            )
        elif isinstance(offsets, torch.Tensor):
            offsets = offsets.cpu().numpy()
        if not instance and labels.ndim == 3 and offsets.ndim == 3:
            offsets = offsets[None]
        return offsets

    def _dense(self, images: torch.Tensor, inference: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised batch ``(N, 3, H, W)`` -> (boundary prob ``(N, H, W)``, direction logits ``(N, D, H, W)``)."""
        if inference not in ("auto", "whole", "sliding"):
            raise ValueError(f"inference: expected 'auto', 'whole' or 'sliding', got {inference!r}")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        factor = self.network_scale(size)
        if factor != 1.0:
            scaled = tuple(max(1, round(s * factor)) for s in size)
            images = torch.nn.functional.interpolate(images, size=scaled, mode="bilinear", align_corners=False)
        prob, logits = self._network_pass(images, inference)
        if self.flip_tta:
            # The mirrored image's directions point the mirrored way: remap the logit channels, then average.
            flipped_prob, flipped_logits = self._network_pass(images.flip(-1), inference)
            remap = torch.as_tensor(
                flip_direction(np.arange(self.num_directions), self.num_directions), device=logits.device
            )
            prob = prob.add_(flipped_prob.flip(-1)).mul_(0.5)
            logits = logits.add_(flipped_logits[:, remap].flip(-1)).mul_(0.5)
            del flipped_prob, flipped_logits
        if factor != 1.0:
            prob = torch.nn.functional.interpolate(prob[:, None], size=size, mode="bilinear")[:, 0]
            logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear")
        return prob, logits

    def network_scale(self, size: tuple[int, int]) -> float:
        """The factor an image of ``size`` (H, W) is resized by before the network: ``input_scale``, raised so
        that the shorter side reaches ``min_short_side``, at most 4."""
        factor = self.input_scale
        short = min(size)
        if self.min_short_side and short * factor < self.min_short_side:
            factor = min(self.min_short_side / short, 4.0)
        return factor

    def _network_pass(self, images: torch.Tensor, inference: str) -> tuple[torch.Tensor, torch.Tensor]:
        # The module's own dtype wins (model.half(), model.to(torch.bfloat16)); autocast still applies on top.
        weight_dtype = next(self.net.parameters()).dtype
        images = images.to(dtype=weight_dtype).contiguous(memory_format=torch.channels_last)
        # A module already cast to half or bf16 runs in its own dtype: 'auto' adds no autocast on top.
        precision = "fp32" if self.precision == "auto" and weight_dtype != torch.float32 else self.precision
        height, width = images.shape[-2:]
        sliding = inference == "sliding" or (inference == "auto" and height * width > self.max_whole_pixels)
        if sliding:
            return predict_sliding(
                self.net,
                images,
                window=self.window_size,
                stride=self.window_stride,
                align_corners=self.align_corners,
                precision=precision,
            )
        return predict_whole(self.net, images, align_corners=self.align_corners, precision=precision)

    def _to_batch(self, image) -> tuple[list[torch.Tensor], bool, bool, torch.device | None]:
        """-> (normalised batches grouped by size, single image?, numpy output?, output device)."""
        if isinstance(image, torch.Tensor):
            given = describe(image)
            if image.ndim not in (3, 4) or image.shape[-3] != 3:
                channels_last = image.ndim == 3 and image.shape[-1] == 3
                hint = "; an (H, W, 3) image needs .permute(2, 0, 1)" if channels_last else ""
                raise ValueError(f"image: expected a tensor (3, H, W) or (N, 3, H, W), got {given}{hint}")
            if image.ndim == 3:
                image, single = image[None], True
            else:
                single = False
            if image.numel() == 0:
                raise ValueError(f"image: expected at least one image of at least 1x1 pixels, got {given}")
            if image.dtype == torch.uint8:
                x = image.to(self.device).float() / 255.0
            elif image.dtype.is_floating_point:
                x = image.to(self.device, torch.float32)
            else:
                raise TypeError(f"image: expected a float tensor in [0, 1] or uint8, got {describe(image)}")
            return self._split_on_cpu([self.normalize(x)]), single, False, image.device
        if isinstance(image, (Image.Image, np.ndarray)) and not (isinstance(image, np.ndarray) and image.ndim == 4):
            arrays, single = [_as_rgb_array(image)], True
        elif isinstance(image, np.ndarray):
            arrays, single = [_as_rgb_array(a) for a in image], False
        elif isinstance(image, (list, tuple)) and image:
            arrays, single = [_as_rgb_array(a) for a in image], False
        else:
            raise TypeError(
                f"image: expected an (H, W, 3) uint8 array, a PIL image, a list of them, or a tensor; "
                f"got {describe(image)}"
            )
        if not arrays or any(a.size == 0 for a in arrays):
            raise ValueError(f"image: expected at least one image of at least 1x1 pixels, got {describe(image)}")
        if len({a.shape[:2] for a in arrays}) == 1:
            stacks = [np.stack(arrays)]
        else:  # different sizes cannot share a forward pass: one image at a time, in the caller's order
            stacks = [a[None] for a in arrays]
        groups = [
            self.normalize(torch.from_numpy(stack).to(self.device).permute(0, 3, 1, 2).float().contiguous() / 255.0)
            for stack in stacks
        ]
        return self._split_on_cpu(groups), single, True, None

    def _split_on_cpu(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """On the CPU, run a batch image by image: measured on a 2-core machine, a batch of 8 CamVid images took
        2x longer per image in one pass (the activations of the whole batch fall out of cache)."""
        if self.device.type != "cpu":
            return groups
        return [image[None] for group in groups for image in group]

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        device: str | torch.device | None = None,
        map_location: str | torch.device | None = None,
        strict: bool = True,
        proxies: dict | None = None,
        **overrides,
    ) -> SegFix:
        """Load a model from a bundled short name, a local folder, or a HuggingFace Hub repo id.

        Args:
            pretrained_model_name_or_path: a name from :func:`segfix.list_models`, a folder written by
                :meth:`save_pretrained`, or a Hub repo id (``"org/name"``).
            revision: Hub branch, tag or commit (passed to every download, like the next four).
            cache_dir: Hugging Face cache folder.
            force_download: download again even if cached.
            local_files_only: use the cache only, never the network.
            token: Hub token for private repos.
            device: where to put the model (default CPU).
            map_location: the Hub mixin's name for ``device`` (the weights are read there); give one of the two.
            strict: refuse missing or unexpected weights (default True).
            proxies: accepted for the Hub mixin's older signature; this huggingface_hub takes proxies from the
                ``HTTP(S)_PROXY`` environment, so a value here is refused with that hint.
            overrides: config values to change, e.g. ``inference="sliding"`` or ``semantic_scale=1``.

        Returns:
            The model in eval mode. The backbone is built from the saved weights; nothing else is downloaded.

        Raises:
            ModelLoadError: missing or invalid ``config.json``, unreadable or mismatched weights, or a Hub model
                that is not cached while offline; the message says how to fix it.
            FileNotFoundError: a path that does not exist.
        """
        if map_location is not None:
            if device is not None and torch.device(device) != torch.device(map_location):
                raise ValueError(f"device={device!r} and map_location={map_location!r} disagree; give one of them")
            device = map_location
        if proxies:
            raise ValueError(
                "proxies: this huggingface_hub reads proxies from the HTTP_PROXY / HTTPS_PROXY environment "
                "variables; set those instead"
            )
        if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            raise TypeError(
                "pretrained_model_name_or_path: expected a bundled model name, a folder or a Hub repo id (str or "
                f"path), got {pretrained_model_name_or_path!r}"
            )
        name = os.fspath(pretrained_model_name_or_path)
        folder = bundled_model_dir(name)
        if folder is not None:
            config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        elif name in BUNDLED_MODELS:
            raise ModelLoadError(
                f"the bundled model {name!r} is not part of this installation (files missing); reinstall segfix-pytorch"
            )
        elif os.path.isdir(name):
            config_file, weights_file = Path(name) / CONFIG_NAME, Path(name) / WEIGHTS_NAME
        elif _looks_like_path(name):
            raise FileNotFoundError(
                f"{name!r}: no such folder. Expected a folder written by SegFix.save_pretrained, "
                f"a bundled model {list_models()}, or a Hub repo id 'org/name'"
            )
        elif "/" not in name and (guess := difflib.get_close_matches(name, list(BUNDLED_MODELS), n=1, cutoff=0.75)):
            raise ModelLoadError(
                f"{name!r} is not a bundled model; did you mean {guess[0]!r}? Bundled: {list_models()}; "
                "a Hub model is named 'org/name'"
            )
        else:
            kwargs = dict(
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only,
                token=token,
            )
            if not local_files_only and not hub_reachable():
                # No route to the Hub: read the cache at once instead of retrying for half a minute.
                kwargs["local_files_only"] = True
            config_file = _hub_file(name, CONFIG_NAME, kwargs)
            weights_file = _hub_file(name, WEIGHTS_NAME, kwargs)
        model = cls._build(config_file, overrides)
        model.weights_dtype = model._load_weights(weights_file, strict=strict)
        card = Path(config_file).with_name("README.md")
        model.source_card = card.read_text() if card.is_file() else None
        if device is not None:
            model.to(device)
        return model.eval()

    @classmethod
    def _build(cls, config_file: Path, overrides: dict) -> SegFix:
        if not config_file.is_file():
            raise ModelLoadError(
                f"{config_file}: config.json is missing; a SegFix model folder holds config.json "
                "and model.safetensors (write one with SegFix.save_pretrained)"
            )
        size = config_file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ModelLoadError(f"{config_file}: {size} bytes; a SegFix config.json is a few hundred bytes")
        try:
            config = json.loads(config_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ModelLoadError(f"{config_file}: not a readable JSON config ({reason})") from error
        if not isinstance(config, dict):
            raise ModelLoadError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
        known = set(cls._hub_mixin_init_parameters) - {"self"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ModelLoadError(
                f"{config_file}: unknown config key(s) {unknown}; this segfix version knows {sorted(known)}"
            )
        bad_overrides = sorted(set(overrides) - known)
        if bad_overrides:
            raise TypeError(f"from_pretrained: unknown override(s) {bad_overrides}; config keys are {sorted(known)}")
        try:
            return cls(**{**config, **overrides})
        except (TypeError, ValueError) as error:
            raise ModelLoadError(f"{config_file}: invalid config ({error})") from error

    def _load_weights(self, weights_file: Path, *, strict: bool) -> torch.dtype | None:
        """Load the file's tensors; returns the floating dtype they were stored in (None when mixed)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not Path(weights_file).is_file():
            raise ModelLoadError(f"{weights_file}: model.safetensors is missing")
        try:
            state = load_file(str(weights_file), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelLoadError(
                f"{weights_file}: not a valid safetensors file ({error}); it may be truncated or "
                "corrupt: download it again (force_download=True) or re-save the model"
            ) from error
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise ModelLoadError(
                f"{weights_file}: weights do not match the config; missing keys {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''}"
            )
        wrong = [
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in state
            if k in own and state[k].shape != own[k].shape
        ]
        if wrong:
            raise ModelLoadError(f"{weights_file}: tensor shapes do not match the config: {wrong[:5]}")
        if missing or unexpected:
            _logger.warning("non-strict load of %s: missing %s, unexpected %s", weights_file, missing, unexpected)
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        stored = {v.dtype for v in state.values() if v.is_floating_point()}
        return stored.pop() if len(stored) == 1 else None

    def generate_model_card(self, *args, **kwargs):
        """The card of the model this one was loaded from (its licence and results stay with its weights),
        else the library's template."""
        if self.source_card is not None:
            from huggingface_hub import ModelCard

            return ModelCard(self.source_card)
        return super().generate_model_card(*args, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        def stored(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.detach().contiguous().cpu()
            if self.weights_dtype is not None and tensor.is_floating_point():
                return tensor.to(self.weights_dtype)
            return tensor

        state = {k: stored(v) for k, v in self.state_dict().items()}
        target = Path(save_directory) / WEIGHTS_NAME
        tmp = target.with_name(f".{WEIGHTS_NAME}.partial")
        save_file(state, str(tmp), metadata={"format": "pt", "library": "segfix"})
        os.replace(tmp, target)


# Bounds on what a config file may ask for, checked before anything is built: each is far above any use
# (the paper uses scale 2, one iteration, 1024-pixel windows) and far below what exhausts a machine.
MAX_CONFIG_BYTES = 1 << 16
MAX_SCALE = 64
MAX_ITERATIONS = 16
MAX_WINDOW = 16384
MAX_WHOLE_PIXELS = 1 << 28


def _check_settings(**settings: Any) -> None:
    for name in ("boundary_threshold", "direction_threshold"):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")
    for name, top in (("semantic_scale", MAX_SCALE), ("instance_scale", MAX_SCALE), ("iterations", MAX_ITERATIONS)):
        _check_int(settings[name], name, 1, top)
    window, stride = settings["window_size"], settings["window_stride"]
    for value in _pair_values(window, "window_size"):
        _check_int(value, "window_size", 16, MAX_WINDOW)
    if stride is not None:
        for value in _pair_values(stride, "window_stride"):
            _check_int(value, "window_stride", 1, MAX_WINDOW)
    _check_int(settings["max_whole_pixels"], "max_whole_pixels", 1, MAX_WHOLE_PIXELS)
    if settings["precision"] not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision: expected 'auto', 'fp32', 'bf16' or 'fp16', got {settings['precision']!r}")
    ignore = settings["ignore_index"]
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise ValueError(f"ignore_index: expected an integer or None, got {ignore!r}")


def _check_int(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name}: expected an integer in {low}..{high}, got {value!r}")


def _pair_values(value: Any, name: str) -> tuple:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)
    raise ValueError(f"{name}: expected one int or (h, w), got {value!r}")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = [int(v) for v in value]
    if len(pair) != 2:
        raise ValueError(f"expected one int or (h, w), got {value!r}")
    return pair[0], pair[1]


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(name: str) -> bool:
    """True unless ``name`` has the form of a Hub repo id (``name`` or ``org/name``)."""
    return _REPO_ID.match(name) is None or name.endswith((".json", ".safetensors"))


def _hub_file(repo_id: str, filename: str, kwargs: dict) -> Path:
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, **kwargs))
    except LocalEntryNotFoundError as error:
        raise ModelLoadError(
            f"{repo_id}/{filename} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"(offline, HF_HUB_OFFLINE=1 or local_files_only=True). Run once with network access to cache it, pass "
            f"cache_dir= where it is cached, load a folder written by save_pretrained, or use a bundled model "
            f"{list_models()}"
        ) from error
    except EntryNotFoundError as error:
        what = "config.json" if filename == CONFIG_NAME else filename
        raise ModelLoadError(
            f"{repo_id}: the repo has no {what}; is it a SegFix model saved with save_pretrained?"
        ) from error
    except RevisionNotFoundError as error:
        raise ModelLoadError(f"{repo_id}: revision {kwargs.get('revision')!r} does not exist") from error
    except RepositoryNotFoundError as error:
        raise ModelLoadError(
            f"{repo_id}: no such model on the Hub (or it is private: pass token=). Bundled models: {list_models()}"
        ) from error


def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected an (H, W, 3) uint8 array or a PIL image, got {describe(image)}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected shape (H, W, 3) (RGB), got {describe(image)}")
    if image.dtype != np.uint8:
        raise TypeError(f"image: expected dtype uint8 (0..255), got {describe(image)}; for floats pass a tensor")
    return np.ascontiguousarray(image)


def _require_array(labels, name: str) -> None:
    if not isinstance(labels, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a numpy.ndarray or torch.Tensor, got {describe(labels)}")
    floating = labels.dtype.is_floating_point if isinstance(labels, torch.Tensor) else labels.dtype.kind == "f"
    if floating:
        axis = "1" if labels.ndim == 4 else "0"
        raise TypeError(
            f"{name}: expected integer class ids, got {describe(labels)}; these look like a model's logits or "
            f"scores: pass their argmax over the class axis (e.g. .argmax({axis}))"
        )


def _stack_or_list(parts: list[torch.Tensor]):
    """One tensor when every part has the same image size (a batch), else a list (one entry per image)."""
    if len(parts) == 1:
        return parts[0]
    if len({tuple(p.shape[1:]) for p in parts}) == 1:
        return torch.cat(parts)
    return parts


def _finish(x, single: bool, as_numpy: bool, device: torch.device | None):
    if isinstance(x, list):  # images of different sizes: one single-image result each
        return [_finish(p, True, as_numpy, device) for p in x]
    if single:
        x = x[0]
    if as_numpy:
        return x.cpu().numpy()
    return x.to(device) if device is not None else x
