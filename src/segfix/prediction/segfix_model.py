"""``SegFix``: the user-facing model. Load it, hand it an image and any model's label map, get the refined map
(``SegFix.from_pretrained("camvid-lite0-v7").refine(image, label_map)``).

It holds the pipeline together and rebuilds none of it: inputs (:mod:`~segfix.prediction.inputs`), the network
(:mod:`~segfix.network.segfix_net`) run by :mod:`~segfix.prediction.inference`, the decision
(:mod:`~segfix.prediction.decision`) into a refinement field, and refinement by its one owner
(:func:`segfix.prediction.refinement.refine_labels`); files by :mod:`~segfix.hub.mixin`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..checks import check_device_available, check_steps
from ..hub.config import refuse_settings_among, split_config
from ..hub.mixin import MODEL_CARD_TEMPLATE, SegFixHubMixin
from ..hub.settings import FLAT_NAMES, ModelSettings
from ..network.segfix_net import SegFixNet
from ..ops.field import RefinementField, apply_field_to_instances, check_field_labels, concat_fields
from . import inputs
from .decision import decide, decide_maps, field_from_maps
from .inference import InferenceNetwork, dense_prediction
from .inputs import ImageBatch, ImageInput, Labels, Masks, to_batch
from .labels import LabelSpace, label_map_as_ids
from .memory import bound_kernel_cache, keep_freed_memory
from .outputs import NetworkOutputs, Prediction
from .refinement import pooled_thin_classes, refine_labels

__all__ = ["SegFix"]


CPU_FALLBACK = "the model runs on the CPU as it is (leave it there, or pass device='cpu')"


def _cuda_name(device: Any) -> Any:
    return f"cuda:{device}" if isinstance(device, int) else device


class SegFix(
    nn.Module,
    SegFixHubMixin,
    library_name="segfix",
    license="mit",
    tags=["segfix", "boundary-refinement", "image-segmentation"],
    repo_url="https://github.com/segfix-pytorch/segfix-pytorch",
    docs_url="https://github.com/segfix-pytorch/segfix-pytorch/tree/main/docs",
    model_card_template=MODEL_CARD_TEMPLATE,
):
    """The SegFix network plus its settings: everything in ``config.json``.

    Args:
        preprocessing: a :class:`~segfix.hub.settings.Preprocessing` (or a mapping of its fields); None: the
            defaults. Likewise ``inference`` (:class:`~segfix.hub.settings.InferenceSettings`) and ``decision``
            (:class:`~segfix.hub.settings.DecisionSettings`).
        **network: the arguments of :class:`segfix.network.segfix_net.SegFixNet` (``backbone``, ``out_indices``, ...).

    The settings are held frozen in :attr:`settings` (``model.settings.decision.iterations``). To change one,
    :meth:`with_settings` gives a model that shares this network with those settings changed, by flat name:
    ``model.with_settings(flip_tta=True)``.

    ``from_pretrained`` sets ``weights_dtype`` (the stored weights' dtype, which ``save_pretrained`` keeps; set
    ``torch.float32`` to save full precision) and ``source_card`` (the folder's model card, saved again so that
    the weights keep their licence); see :class:`segfix.hub.mixin.SegFixHubMixin`.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor
    settings: ModelSettings
    network_arguments = tuple(inspect.signature(SegFixNet).parameters)

    def __init__(self, *, preprocessing: Any = None, inference: Any = None, decision: Any = None, **network: Any):
        super().__init__()
        refuse_settings_among(network)
        self.settings = ModelSettings.from_groups(preprocessing=preprocessing, inference=inference, decision=decision)
        arguments = inspect.signature(SegFixNet).bind(**network)
        arguments.apply_defaults()
        self.net = SegFixNet(**arguments.arguments)
        # channels-last convolutions were 1.4x faster on the CPU (and are the fast layout on GPUs)
        self.net.to(memory_format=torch.channels_last)
        self._normalise_by(self.settings, torch.device("cpu"))
        self.network_config = {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.arguments.items()}
        self.weights_dtype: torch.dtype | None = None
        self.source_card: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SegFix:
        """A new (untrained) model from what ``config.json`` holds, nested or flat (as recipes write it)."""
        network, settings = split_config(config)
        return cls(**network, **settings.groups())

    def with_settings(self, **changes: Any) -> SegFix:
        """A model sharing this network (and its weights) with some settings changed by flat name, e.g.
        ``model.with_settings(flip_tta=True, inference="sliding")``; this model is left as it is."""
        other = copy.copy(self)
        other.__dict__["settings"] = settings = self.settings.replace(**changes)
        other.__dict__["_buffers"] = dict(self._buffers)  # its own mean and std, the same network
        other._normalise_by(settings, self.device)
        return other

    def _normalise_by(self, settings: ModelSettings, device: torch.device) -> None:
        for name, values in (("pixel_mean", settings.preprocessing.mean), ("pixel_std", settings.preprocessing.std)):
            self.register_buffer(name, torch.tensor(values, device=device).view(1, 3, 1, 1), persistent=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in FLAT_NAMES:  # settings are frozen: an attribute by that name would be ignored by every route
            raise AttributeError(f"{name} is a frozen setting; use model = model.with_settings({name}={value!r})")
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in FLAT_NAMES:  # no proxy: a setting's name only gets the place to read it
            raise AttributeError(f"{name} is a setting: read model.settings.get({name!r}) or its group's field")
        return super().__getattr__(name)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """In place, as ``nn.Module.compile``: the network runs through ``torch.compile`` on every route
        (``refine``, ``predict``, the folder jobs), i.e. ``torch_compile=True``. ``torch.compile(model)`` would
        compile ``forward`` alone, which refinement does not call. Arguments (``mode=``, ...) are not taken:
        this model compiles with torch's defaults."""
        if args or kwargs:
            raise TypeError(f"compile: takes no arguments, got {args or ''}{kwargs or ''} (torch.compile's defaults)")
        self.__dict__["settings"] = self.settings.replace(torch_compile=True)

    def cuda(self, device: Any = None) -> SegFix:
        """As ``nn.Module.cuda``, refused with a clear message where no CUDA GPU is (torch's is about drivers)."""
        check_device_available("cuda" if device is None else _cuda_name(device), "model.cuda()", CPU_FALLBACK)
        return super().cuda(device)

    def to(self, *args: Any, **kwargs: Any) -> SegFix:
        """As ``nn.Module.to``; a device this machine lacks is refused with a clear message."""
        device = kwargs.get("device", args[0] if args and isinstance(args[0], (str, torch.device)) else None)
        if device is not None:
            check_device_available(device, f"model.to({str(device)!r})", CPU_FALLBACK)
        return super().to(*args, **kwargs)

    num_directions = property(lambda self: int(self.network_config["num_directions"]), doc="D, the direction classes")
    align_corners = property(lambda self: bool(self.network_config["align_corners"]), doc="upsampling convention")

    device = property(lambda self: self.pixel_mean.device, doc="the device of the model's weights and buffers")

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
    def network_outputs(self, image: ImageInput, *, inference: str | None = None) -> NetworkOutputs:
        """The network's outputs for an image (or a batch of one size) on the network's own grid, by this
        model's settings (input size, flips, whole image or windows; ``inference`` overrides the mode): what
        :func:`segfix.prediction.decision.decide` takes."""
        groups = to_batch(image, self.device).groups
        if len({tuple(g.shape[-2:]) for g in groups}) != 1:
            sizes = sorted({tuple(g.shape[-2:]) for g in groups})
            raise ValueError(f"network_outputs: expected one image or images of one size, got sizes {sizes}")
        return NetworkOutputs.concat([self._outputs(g, inference) for g in groups])

    def network_scale(self, size: tuple[int, int]) -> float:
        """The factor an image of ``size`` (H, W) is resized by before the network (see
        :meth:`segfix.hub.settings.Preprocessing.network_scale`)."""
        return self.settings.preprocessing.network_scale(size)

    def _outputs(self, images: torch.Tensor, inference: str | None) -> NetworkOutputs:
        settings = self.settings if inference is None else self.settings.replace(inference=inference)
        factor = self.network_scale((int(images.shape[-2]), int(images.shape[-1])))
        # outside the module tree: the state dict stays the network's; shared with with_settings() copies
        if images.device.type == "cpu":  # before the first convolution, folding's probe included: read once there
            keep_freed_memory()  # a page fault per page of every large tensor otherwise (segfix.prediction.memory)
            bound_kernel_cache()  # oneDNN keeps the kernels of every image size it meets otherwise
        runner = self.__dict__.setdefault("inference_net", InferenceNetwork())
        network = runner.get(self.net, settings.inference.torch_compile)
        return dense_prediction(
            network,
            images,
            settings.inference,
            input_factor=factor,
            normalize=self.normalize,
            align_corners=self.align_corners,
        )

    @torch.inference_mode()
    def predict(self, image: ImageInput, *, inference: str | None = None, direction_prob: bool = False) -> Prediction:
        """Boundary probability, direction class and the decided moving pixels, at image resolution.

        Args:
            image: one image or a batch (see :mod:`segfix.prediction.inputs`).
            inference: override the ``'auto'`` / ``'whole'`` / ``'sliding'`` setting.
            direction_prob: also return the direction probabilities (D floats per pixel).

        Returns:
            A :class:`~segfix.prediction.outputs.Prediction`: ``(H, W)`` maps for one image, ``(N, H, W)`` for a
            batch; numpy for numpy/PIL input, torch tensors on the input's device for tensor input.
        """
        batch = to_batch(image, self.device)
        parts: list[list[torch.Tensor]] = [[], [], [], []]
        for group in batch.groups:
            prob, logits = self._outputs(group, inference).full()
            direction, moving, softmax = decide_maps(prob, logits, self.settings.decision, keep_prob=direction_prob)
            for part, x in zip(parts, (prob, direction, moving, softmax)):
                part.extend([] if x is None else [x])
        return Prediction(*(inputs.finish(inputs.stack_or_list(x), batch) if x else None for x in parts))

    @torch.inference_mode()
    def predict_field(
        self, image: ImageInput, *, instance: bool = False, inference: str | None = None
    ) -> RefinementField | list[RefinementField]:
        """The :class:`~segfix.ops.field.RefinementField` of an image (or a batch of one size; a list of fields
        for images of different sizes), on the model's device; ``instance``: for instance masks."""
        return self._fields(to_batch(image, self.device), inference, instance)

    @torch.inference_mode()
    def _fields(
        self, batch: ImageBatch, inference: str | None, instance: bool
    ) -> RefinementField | list[RefinementField]:
        outputs = (self._outputs(g, inference) for g in batch.groups)
        fields = [decide(o, self.settings.decision, instance=instance) for o in outputs]
        return concat_fields(fields) if len({f.size for f in fields}) == 1 else fields

    @torch.inference_mode()
    def predict_offsets(self, image: ImageInput, *, inference: str | None = None) -> Any:
        """Integer offsets ``(2, H, W)`` (or ``(N, 2, H, W)``), int8, channel order ``(dy, dx)``, unscaled,
        zero off the predicted boundary (the argmax rule's field)."""
        batch = to_batch(image, self.device)
        outputs = (self._outputs(group, inference) for group in batch.groups)
        offsets = [decide(o, self.settings.decision, instance=True).offsets for o in outputs]
        return inputs.finish(inputs.stack_or_list(offsets), batch)

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
                a PIL label image or a bool mask (each returned in its own form); or a list of maps, one per image
                (what ``post_process_semantic_segmentation`` returns; the ``"auto"`` thin classes are then read
                from the whole list, as from a batch). Logits are refused with a hint: pass ``logits.argmax(dim)``.
            scale: offset scale; default ``semantic_scale`` from the settings.
            iterations: steps along the field; default from the settings.
            inference: override the ``'auto'`` / ``'whole'`` / ``'sliding'`` setting.

        Returns:
            The refined label map: same type, dtype, shape (and device) as ``label_map``; a list for a list.
        """
        if isinstance(label_map, (list, tuple)):
            pairs = inputs.pair_maps_with_images(image, label_map)
            pooled = self._pooled_thin_classes([m for _, m in pairs])
            return [self._refine(i, m, scale, iterations, inference, pooled) for i, m in pairs]
        return self._refine(image, label_map, scale, iterations, inference, None)

    def _refine(self, image: ImageInput, label_map: Any, scale, iterations, inference, pooled) -> Any:
        ids, restore = label_map_as_ids(label_map)  # refused before the network runs; converted once
        check_steps(scale, iterations)
        batch = to_batch(image, self.device)
        field = inputs.one_field(self._fields(batch, inference, instance=False))
        check_field_labels(ids, field, single=batch.single)
        space = LabelSpace(ignore_index=self.settings.decision.ignore_index)
        return restore(refine_labels(field.with_steps(scale, iterations), ids, label_space=space, pooled=pooled))

    def _pooled_thin_classes(self, label_maps: list[Any]) -> tuple[int, ...] | None:
        """The ``"auto"`` thin classes of a list of maps given to one call, read from the whole list (as a batch
        and a folder pool theirs); None where the guard is off, fixed, or the list holds one map."""
        decision = self.settings.decision
        if not decision.thin_guard or decision.thin_guard_classes != "auto" or len(label_maps) < 2:
            return None
        space = LabelSpace(ignore_index=decision.ignore_index)
        return pooled_thin_classes(label_maps, decision.thin_guard, label_space=space)

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
        check_steps(scale, iterations)
        ignore = self.settings.decision.ignore_index if ignore_index == "config" else ignore_index
        if isinstance(ignore, str):
            raise ValueError(f"ignore_index: expected an integer, None or 'config', got {ignore!r}")
        field = self._field_of(prediction).with_steps(scale, iterations)
        return refine_labels(field, label_map, label_space=LabelSpace(ignore_index=ignore))

    def _field_of(self, prediction: Prediction) -> RefinementField:
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
        label_map_as_ids(masks)  # the same refusals as a label map's, before the network runs
        check_steps(scale, iterations)
        batch = to_batch(image, self.device)
        field = inputs.one_field(self._fields(batch, inference, instance=True))
        check_field_labels(masks, field, single=batch.single, instance=True)
        field = field.with_steps(scale, iterations)
        return apply_field_to_instances(field, masks, scores=scores, resolve_overlaps=resolve_overlaps)
