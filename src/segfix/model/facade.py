"""``SegFix``: the user-facing model. Load it, hand it an image and any model's label map, get the refined map.

>>> from segfix import SegFix                                      # doctest: +SKIP
>>> model = SegFix.from_pretrained("camvid-lite0-v5")              # doctest: +SKIP
>>> refined = model.refine(image, label_map)                       # doctest: +SKIP

The model is laid out as data flows through it: the network (:class:`segfix.model.network.SegFixNet`); a dense
prediction (:meth:`SegFix.dense`, the policy in :func:`segfix.model.inference.dense_prediction`); one decision step
that yields a :class:`segfix.ops.field.RefinementField`; and one function that applies a field to labels
(:func:`segfix.ops.field.apply_field`). Images are adapted by :mod:`segfix.model.batching` (numpy in, numpy out; tensors
in, tensors out on the input's device); model files are read and written by :mod:`segfix.model.hub`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from .._checks import check_positive_int, check_scale
from ..ops.field import (
    RefinementField,
    apply_field,
    apply_field_to_instances,
    check_field_labels,
    concat_fields,
    decide,
    field_from_maps,
    moving_pixels,
)
from .batching import (
    ImageBatch,
    ImageInput,
    finish,
    label_image_to_array,
    require_label_array,
    stack_or_list,
    to_batch,
)
from .folding import InferenceNetwork
from .hub import ModelLoadError, SegFixHubMixin
from .inference import NetworkOutputs, dense_prediction
from .network import SegFixNet
from .settings import FLAT_NAMES, ModelSettings

__all__ = ["ImageInput", "ModelLoadError", "Prediction", "SegFix"]

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

Labels = TypeVar("Labels", np.ndarray, torch.Tensor, list[np.ndarray], list[torch.Tensor])
"""A label map as :meth:`SegFix.refine` takes and returns it: numpy, torch, or a list of either."""

Masks = TypeVar("Masks", np.ndarray, torch.Tensor)


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
    SegFixHubMixin,
    library_name="segfix",
    license="mit",
    tags=["segfix", "boundary-refinement", "image-segmentation"],
    repo_url="https://github.com/segfix-pytorch/segfix-pytorch",
    docs_url="https://github.com/segfix-pytorch/segfix-pytorch/tree/main/docs",
    model_card_template=_MODEL_CARD,
):
    """The SegFix network plus its settings: everything in ``config.json``.

    Network arguments are those of :class:`segfix.model.network.SegFixNet`. The settings are documented, grouped, in
    :mod:`segfix.model.settings` (``mean``, ``std``, ``channel_order``, ``input_scale``, ``min_short_side``,
    ``max_network_pixels`` in
    :class:`~segfix.model.settings.Preprocessing`; ``inference``, ``window_size``, ``window_stride``,
    ``max_whole_pixels``, ``precision``, ``flip_tta`` in :class:`~segfix.model.settings.InferenceSettings`;
    ``boundary_threshold``, ``direction_threshold``, ``direction_vote``, ``semantic_scale``,
    ``instance_scale``, ``iterations``, ``thin_guard``, ``thin_guard_classes``, ``ignore_index`` in
    :class:`~segfix.model.settings.DecisionSettings`). They
    are held frozen in :attr:`settings`; each can be read as an attribute (``model.flip_tta``), and
    :meth:`with_settings` gives a model that shares this network with other settings.

    ``from_pretrained`` sets ``weights_dtype`` (the stored weights' dtype, which ``save_pretrained`` keeps; set
    ``torch.float32`` to save full precision) and ``source_card`` (the folder's model card, saved again so that
    the weights keep their licence); see :class:`segfix.model.hub.SegFixHubMixin`.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor
    settings: ModelSettings
    network_arguments = tuple(inspect.signature(SegFixNet).parameters)

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
        max_network_pixels: int = 0,
        precision: str = "auto",
        flip_tta: bool = False,
        torch_compile: bool = False,
        direction_vote: bool = False,
        thin_guard: int = 0,
        thin_guard_classes: Sequence[int] | str | None = None,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__()
        arguments = dict(locals())  # the signature above is the one list of names: split it, never repeat it
        settings = ModelSettings.from_flat({k: v for k, v in arguments.items() if k in FLAT_NAMES})
        network = {k: v for k, v in arguments.items() if k in self.network_arguments}
        self.net = SegFixNet(**network)
        # channels-last convolutions were 1.4x faster on the CPU (and are the fast layout on GPUs)
        self.net.to(memory_format=torch.channels_last)
        mean_t = torch.tensor(settings.preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(settings.preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean_t, persistent=False)
        self.register_buffer("pixel_std", std_t, persistent=False)
        self.network_config: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in network.items()}
        self.settings = settings
        self.weights_dtype: torch.dtype | None = None
        self.source_card: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name in FLAT_NAMES and "settings" in self.__dict__:
            return self.__dict__["settings"].get(name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # model.flip_tta = True keeps working: the frozen settings are replaced, validated, never half-changed.
        if name in FLAT_NAMES and "settings" in self.__dict__:
            self.__dict__["settings"] = self.settings.replace(**{name: value})
            return
        super().__setattr__(name, value)

    def with_settings(self, **changes: Any) -> SegFix:
        """A model sharing this network (and its weights) with some settings changed by flat name, e.g.
        ``model.with_settings(flip_tta=True, inference="sliding")``; this model is left as it is."""
        other = copy.copy(self)
        other.__dict__["settings"] = self.settings.replace(**changes)
        return other

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """In place, as ``nn.Module.compile``: the network runs through ``torch.compile`` on every route
        (``refine``, ``predict``, the folder jobs), i.e. ``torch_compile=True``. ``torch.compile(model)`` would
        compile ``forward`` alone, which refinement does not call. Arguments (``mode=``, ...) are not taken:
        this model compiles with torch's defaults."""
        if args or kwargs:
            raise TypeError(
                f"compile: takes no arguments here, got {args or ''}{kwargs or ''}; the network compiles with "
                "torch.compile's defaults"
            )
        self.__dict__["settings"] = self.settings.replace(torch_compile=True)

    num_directions = property(lambda self: int(self.network_config["num_directions"]), doc="D, the direction classes")
    align_corners = property(lambda self: bool(self.network_config["align_corners"]), doc="upsampling convention")

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def config(self) -> dict:
        """What ``config.json`` holds: ``{"network": {...}, "preprocessing": {...}, "inference": {...},
        "decision": {...}}``, from the current settings."""
        return {"network": dict(self.network_config), **self.settings.as_config()}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` -> (boundary logits, direction logits) at the network's stride."""
        return self.net(images)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Float RGB images in [0, 1] ``(N, 3, H, W)`` -> the network's input (channel order, mean, std)."""
        if self.settings.preprocessing.channel_order == "BGR":
            images = images.flip(1)
        return images.sub(self.pixel_mean).div_(self.pixel_std)  # one new tensor, not two (same values)

    @torch.inference_mode()
    def dense(self, image: ImageInput, *, inference: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's dense outputs at image resolution, before any decision, by this model's inference
        settings (input size, flip averaging, whole image or windows).

        Args:
            image: one image, or a batch of images of one size (see :mod:`segfix.model.batching`).
            inference: override the ``'auto'`` / ``'whole'`` / ``'sliding'`` setting.

        Returns:
            (boundary probability ``(N, H, W)``, direction logits ``(N, D, H, W)``), float32 on the model's device.
        """
        groups = to_batch(image, self.device, self.normalize).groups
        if len({tuple(g.shape[-2:]) for g in groups}) != 1:
            sizes = sorted({tuple(g.shape[-2:]) for g in groups})
            raise ValueError(f"dense: expected one image or images of one size, got sizes {sizes}")
        outputs = [self._outputs(g, inference).full() for g in groups]
        return torch.cat([p for p, _ in outputs]), torch.cat([d for _, d in outputs])

    @torch.inference_mode()
    def network_outputs(self, image: ImageInput, *, inference: str | None = None) -> NetworkOutputs:
        """The network's outputs for an image (or a batch of one size) on the network's own grid, before any
        decision: what :func:`segfix.ops.field.decide` takes (:meth:`dense` is them at image resolution)."""
        groups = to_batch(image, self.device, self.normalize).groups
        if len({tuple(g.shape[-2:]) for g in groups}) != 1:
            sizes = sorted({tuple(g.shape[-2:]) for g in groups})
            raise ValueError(f"network_outputs: expected one image or images of one size, got sizes {sizes}")
        outputs = [self._outputs(g, inference) for g in groups]
        if len(outputs) == 1:
            return outputs[0]
        first = outputs[0]
        prob = torch.cat([o.boundary_prob for o in outputs])
        return NetworkOutputs(prob, torch.cat([o.direction_logits for o in outputs]), first.size, first.align_corners)

    def network_scale(self, size: tuple[int, int]) -> float:
        """The factor an image of ``size`` (H, W) is resized by before the network (see
        :meth:`segfix.model.settings.Preprocessing.network_scale`)."""
        return self.settings.preprocessing.network_scale(size)

    def _outputs(self, images: torch.Tensor, inference: str | None) -> NetworkOutputs:
        settings = self.settings.inference
        if inference is not None:
            settings = self.settings.replace(inference=inference).inference
        factor = self.network_scale((int(images.shape[-2]), int(images.shape[-1])))
        return dense_prediction(
            # outside the module tree: the state dict stays the network's; shared with with_settings() copies
            self.__dict__.setdefault("inference_net", InferenceNetwork()).get(self.net, settings.torch_compile),
            images,
            settings,
            input_factor=factor,
            align_corners=self.align_corners,
        )

    @torch.inference_mode()
    def predict(self, image: ImageInput, *, inference: str | None = None, direction_prob: bool = False) -> Prediction:
        """Boundary probability and direction class per pixel, at image resolution.

        Args:
            image: one image or a batch (see :mod:`segfix.model.batching`).
            inference: override the ``'auto'`` / ``'whole'`` / ``'sliding'`` setting.
            direction_prob: also return the direction probabilities (D floats per pixel).

        Returns:
            A :class:`Prediction`: ``(H, W)`` maps for one image, ``(N, H, W)`` for a batch; numpy for numpy/PIL
            input, torch tensors on the input's device for tensor input.
        """
        batch = to_batch(image, self.device, self.normalize)
        parts: list[list[torch.Tensor]] = [[], [], [], []]
        for group in batch.groups:
            prob, logits = self._outputs(group, inference).full()
            direction = logits.argmax(1)
            decision = self.settings.decision
            # In place: at 4096x8192 the (N, 8, H, W) volume is 1 GiB, and the logits are not needed after.
            wanted = direction_prob or (decision.direction_threshold > 0 and not decision.direction_vote)
            softmax = torch.softmax(logits, 1, out=logits) if wanted else None
            moving = moving_pixels(prob, decision, softmax)
            for part, x in zip(parts, (prob, direction, moving, softmax if direction_prob else None)):
                part.extend([] if x is None else [x])
        return Prediction(*(finish(stack_or_list(x), batch) if x else None for x in parts))

    @torch.inference_mode()
    def predict_field(
        self, image: ImageInput, *, instance: bool = False, inference: str | None = None
    ) -> RefinementField | list[RefinementField]:
        """The :class:`~segfix.ops.field.RefinementField` of an image (or a batch of one size; a list of fields
        for images of different sizes), on the model's device; ``instance``: for instance masks."""
        return self._fields(to_batch(image, self.device, self.normalize), inference, instance)

    @torch.inference_mode()
    def _fields(
        self, batch: ImageBatch, inference: str | None, instance: bool
    ) -> RefinementField | list[RefinementField]:
        decision = self.settings.decision
        outputs = (self._outputs(g, inference) for g in batch.groups)
        fields = [decide(o, decision, instance=instance) for o in outputs]
        if len({f.size for f in fields}) == 1:
            return concat_fields(fields)
        return fields

    @torch.inference_mode()
    def predict_offsets(self, image: ImageInput, *, inference: str | None = None) -> Any:
        """Integer offsets ``(2, H, W)`` (or ``(N, 2, H, W)``), int8, channel order ``(dy, dx)``, unscaled,
        zero off the predicted boundary (the argmax rule's field)."""
        batch = to_batch(image, self.device, self.normalize)
        outputs = (self._outputs(group, inference) for group in batch.groups)
        offsets = [decide(o, self.settings.decision, instance=True).offsets for o in outputs]
        return finish(stack_or_list(offsets), batch)

    def refine(
        self,
        image: ImageInput,
        label_map: Labels,
        *,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ) -> Labels:
        """Refine a semantic label map predicted by any model for ``image``.

        Args:
            image: the RGB image the label map was predicted from (or a batch, or a list of images).
            label_map: integer ``(H, W)`` (or ``(N, H, W)`` for a batch), numpy or torch, same size as the image;
                or a list of maps, one per image (what ``post_process_semantic_segmentation`` returns).
                Logits are refused with a hint: pass ``logits.argmax(dim)``.
            scale: offset scale; default ``semantic_scale`` from the settings.
            iterations: steps along the field; default from the settings.
            inference: override the ``'auto'`` / ``'whole'`` / ``'sliding'`` setting.

        Returns:
            The refined label map: same type, dtype, shape (and device) as ``label_map``; a list for a list.
        """
        if isinstance(label_map, (list, tuple)):
            images = _one_per_map(image, label_map)
            return [self.refine(i, m, scale=scale, iterations=iterations, inference=inference) for i, m in images]
        if isinstance(label_map, Image.Image):  # a PIL label map comes back as one, in its own mode and palette
            ids, restore = label_image_to_array(label_map)
            return restore(self.refine(image, ids, scale=scale, iterations=iterations, inference=inference))
        if _is_bool_map(label_map):  # a binary mask: two classes, refined as 0/1
            as_ids = label_map.to(torch.uint8) if isinstance(label_map, torch.Tensor) else label_map.astype(np.uint8)
            refined = self.refine(image, as_ids, scale=scale, iterations=iterations, inference=inference)
            return refined.bool() if isinstance(refined, torch.Tensor) else refined.astype(bool)
        require_label_array(label_map, "label_map")
        _check_steps(scale, iterations)  # refuse bad values before the network runs
        batch = to_batch(image, self.device, self.normalize)
        field = _one_field(self._fields(batch, inference, instance=False))
        check_field_labels(label_map, field, single=batch.single)
        return apply_field(field.with_steps(scale, iterations), label_map, ignore_index=self.ignore_index)

    def refine_prediction(
        self,
        prediction: Prediction,
        label_map: Any,
        *,
        scale: int | None = None,
        iterations: int | None = None,
        ignore_index: int | None | str = "config",
    ) -> Any:
        """Refine ``label_map`` with an existing :meth:`predict` result (no network pass), by this model's rule.

        ``prediction`` must hold ``direction_prob`` when ``direction_vote`` is set. Shapes as :meth:`refine`;
        ``ignore_index`` defaults to the settings'.
        """
        _check_steps(scale, iterations)
        ignore = self.ignore_index if ignore_index == "config" else ignore_index
        if isinstance(ignore, str):
            raise ValueError(f"ignore_index: expected an integer, None or 'config', got {ignore!r}")
        field = self.field_of(prediction).with_steps(scale, iterations)
        return apply_field(field, label_map, ignore_index=ignore)

    def field_of(self, prediction: Prediction) -> RefinementField:
        """The field of a :meth:`predict` result (one image, or a batch of one size), by these settings."""
        if isinstance(prediction.boundary, list):
            raise ValueError("refine: images of different sizes need one call each (or one batch of equal sizes)")
        maps = (prediction.boundary, prediction.direction, prediction.direction_prob)
        return field_from_maps(*maps, self.settings.decision, num_directions=self.num_directions)

    def refine_instances(
        self,
        image: ImageInput,
        masks: Masks,
        *,
        scores: Any = None,
        resolve_overlaps: bool = False,
        scale: int | None = None,
        iterations: int | None = None,
        inference: str | None = None,
    ) -> Masks:
        """Refine instance masks ``(K, H, W)`` predicted for one ``image`` with one field (``instance_scale``,
        argmax rule); see :func:`segfix.refine_instances` for ``scores`` and ``resolve_overlaps``."""
        require_label_array(masks, "masks")
        _check_steps(scale, iterations)
        batch = to_batch(image, self.device, self.normalize)
        field = _one_field(self._fields(batch, inference, instance=True))
        check_field_labels(masks, field, single=batch.single, instance=True)
        field = field.with_steps(scale, iterations)
        return apply_field_to_instances(field, masks, scores=scores, resolve_overlaps=resolve_overlaps)


def _check_steps(scale: Any, iterations: Any) -> None:
    if scale is not None:
        check_scale(scale)
    if iterations is not None:
        check_positive_int(iterations, "iterations")


def _one_field(field: RefinementField | list[RefinementField]) -> RefinementField:
    if isinstance(field, list):
        raise ValueError("refine: images of different sizes need one call each (or one batch of equal sizes)")
    return field


def _one_per_map(images: Any, label_maps: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Pair a list of label maps with their images (a list, a batch, or one image for a list of one)."""
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


def _is_bool_map(label_map: Any) -> bool:
    if isinstance(label_map, torch.Tensor):
        return label_map.dtype == torch.bool
    return isinstance(label_map, np.ndarray) and label_map.dtype == np.bool_
