"""The settings a :class:`segfix.SegFix` model carries beside its network, as three small frozen groups.

* :class:`Preprocessing`: how an image becomes the network's input (normalisation, input size);
* :class:`InferenceSettings`: how the network is run (whole image or windows, precision, flips);
* :class:`DecisionSettings`: how its outputs become a :class:`segfix.ops.field.RefinementField` (thresholds, rule,
  scale, iterations) and which label is never touched.

``config.json`` holds them nested (``{"network": {...}, "preprocessing": {...}, "inference": {...},
"decision": {...}}``; :mod:`segfix.hub.config` reads it). Every value is bounded here, before anything is built,
so that a hostile config cannot exhaust a machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from ..checks import check_guard_classes
from ..limits import (
    MAX_EDGE_DISTANCE,
    MAX_ITERATIONS,
    MAX_SCALE,
    MAX_SHORT_SIDE,
    MAX_THIN_GUARD,
    MAX_WHOLE_PIXELS,
    MAX_WINDOW,
    check_int_range,
    is_int,
)
from ..network.precision import PRECISIONS

__all__ = ["FLAT_NAMES", "DecisionSettings", "InferenceSettings", "ModelSettings", "Preprocessing"]


def _check_probability(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")


def _pair(value: Any, name: str, low: int) -> tuple[int, int]:
    """One int or (h, w) -> (h, w), each checked to lie in ``low..MAX_WINDOW``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values: Sequence = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        values = value
    else:
        raise ValueError(f"{name}: expected one int or (h, w), got {value!r}")
    for v in values:
        check_int_range(v, name, low, MAX_WINDOW)
    return int(values[0]), int(values[1])


@dataclass(frozen=True)
class Preprocessing:
    """Image -> network input.

    Attributes:
        mean: per-channel mean of images scaled to [0, 1], in ``channel_order``.
        std: per-channel standard deviation, likewise (each > 0).
        channel_order: ``'RGB'``, or ``'BGR'`` for the original's checkpoints.
        input_scale: resize images by this factor before the network (predictions return to full size).
        min_short_side: then enlarge images whose shorter side is still below this many pixels until it
            reaches it (at most 4x in all; 0 = off).
        max_network_pixels: then shrink images that would still have more pixels than this until they have
            this many (0 = off): the network works at the size it was trained and tuned at, whatever the
            frame's resolution, and its outputs come back to full size for the labels (as segment-anything
            runs every image at 1024 px).
        min_network_scale: but never shrink an image below this factor of its own size (0 = off): a boundary is
            only as precise as the grid the network draws it on, and a large frame's coarse map errs by a few of
            the frame's own pixels. The bundled models hold 0.75: on Cityscapes' 2048x1024 frames the network at
            0.75 helps, at 0.6 or less (a CamVid pixel budget: 0.43) it harms (docs/results.md, "Any
            resolution").
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    input_scale: float = 1.0
    min_short_side: int = 0
    max_network_pixels: int = 0
    min_network_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order: expected 'RGB' or 'BGR', got {self.channel_order!r}")
        mean, std = tuple(self.mean), tuple(self.std)
        numbers = all(not isinstance(v, bool) and isinstance(v, Real) for v in (*mean, *std))
        # NaN passes every comparison false, and an infinite std turns the image into zeros: both refused
        if len(mean) != 3 or len(std) != 3 or not numbers or not all(np.isfinite((*mean, *std))) or min(std) <= 0:
            raise ValueError(
                f"mean/std: expected 3 finite numbers each (std > 0), got mean={self.mean!r}, std={self.std!r}"
            )
        object.__setattr__(self, "mean", tuple(float(v) for v in mean))
        object.__setattr__(self, "std", tuple(float(v) for v in std))
        scale = self.input_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 4:
            raise ValueError(f"input_scale: expected a factor in (0, 4], got {scale!r}")
        check_int_range(self.min_short_side, "min_short_side", 0, MAX_SHORT_SIDE)
        check_int_range(self.max_network_pixels, "max_network_pixels", 0, MAX_WHOLE_PIXELS)
        floor = self.min_network_scale
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 4:
            raise ValueError(f"min_network_scale: expected a factor in [0, 4] (0 = off), got {floor!r}")

    def network_scale(self, size: tuple[int, int]) -> float:
        """The factor an image of ``size`` (H, W) is resized by before the network: ``input_scale``, raised
        so that the shorter side reaches ``min_short_side`` (at most 4), then lowered so that the network
        sees at most ``max_network_pixels``, but not below ``min_network_scale`` (nor below ``input_scale``
        where that is lower still)."""
        factor = float(self.input_scale)
        short = min(size)
        if self.min_short_side and short * factor < self.min_short_side:
            factor = min(self.min_short_side / short, 4.0)
        pixels = size[0] * size[1]
        if self.max_network_pixels and pixels * factor**2 > self.max_network_pixels:
            floor = min(float(self.min_network_scale), factor)
            factor = max((self.max_network_pixels / pixels) ** 0.5, floor)
        return factor


@dataclass(frozen=True)
class InferenceSettings:
    """How the network runs over an image.

    Attributes:
        mode: ``'whole'``, ``'sliding'`` or ``'auto'`` (whole image up to ``max_whole_pixels``); the flat
            config key is ``inference``.
        window_size: sliding-window size (h, w); one int is square.
        window_stride: sliding-window stride (h, w), at most the window in each direction; None = two thirds of
            the window.
        max_whole_pixels: larger images use sliding windows under ``'auto'`` (bounds memory).
        precision: ``'auto'`` (bf16 where the hardware computes it natively: :mod:`segfix.network.precision`),
            ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        flip_tta: also run the mirrored image and average (directions remapped), at twice the cost.
        torch_compile: run the network through ``torch.compile``: the first image of each size compiles it (about
            a minute on a 2-core CPU), later ones run faster (1.6x at 1024x2048 on an AVX2 CPU); for folder
            jobs of many images, not for one.
    """

    mode: str = "auto"
    window_size: tuple[int, int] = (1024, 1024)
    window_stride: tuple[int, int] | None = None
    max_whole_pixels: int = 4 * 1024 * 1024
    precision: str = "auto"
    flip_tta: bool = False
    torch_compile: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "whole", "sliding"):
            raise ValueError(f"inference: expected 'auto', 'whole' or 'sliding', got {self.mode!r}")
        window = _pair(self.window_size, "window_size", 16)
        object.__setattr__(self, "window_size", window)
        if self.window_stride is not None:
            stride = _pair(self.window_stride, "window_stride", 1)
            if stride[0] > window[0] or stride[1] > window[1]:
                raise ValueError(
                    f"window_stride: expected at most the window_size {window} in each direction (a longer stride "
                    f"leaves pixels no window sees), got {stride}"
                )
            object.__setattr__(self, "window_stride", stride)
        check_int_range(self.max_whole_pixels, "max_whole_pixels", 1, MAX_WHOLE_PIXELS)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {self.precision!r}")
        for name in ("flip_tta", "torch_compile"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")

    @property
    def stride(self) -> tuple[int, int]:
        """The window stride in use: ``window_stride``, or two thirds of the window."""
        if self.window_stride is not None:
            return self.window_stride
        return max(1, 2 * self.window_size[0] // 3), max(1, 2 * self.window_size[1] // 3)

    def uses_windows(self, height: int, width: int) -> bool:
        return self.mode == "sliding" or (self.mode == "auto" and height * width > self.max_whole_pixels)


@dataclass(frozen=True)
class DecisionSettings:
    """Dense predictions -> which pixels move, and how their labels are taken.

    Attributes:
        boundary_threshold: a pixel is boundary (may move) when its boundary probability exceeds this.
        direction_vote: semantic refinement gives each moving pixel the label most of its direction
            probability points at (:func:`segfix.vote_labels`) instead of following the argmax direction.
        min_direction_confidence: the argmax rule only (no ``direction_vote``; instance masks): a boundary pixel
            moves only when its most likely direction's probability exceeds this (0 = always, as the original).
        min_vote_share: the vote only (``direction_vote``): a boundary pixel changes only when the winning
            label's pooled direction probability exceeds this (0 = always).
        semantic_scale: offset scale for semantic maps (2 in the paper).
        instance_scale: offset scale for instance masks (1 in the paper).
        iterations: steps along the field (see :func:`segfix.shift_labels`).
        thin_guard: semantic refinement leaves the thin parts of the label map it refines as they are: the pixels
            that an opening of radius ``thin_guard`` removes from their class (:func:`segfix.thin_parts`; 1:
            segments under 3 px wide). Such a part has no interior to take a label from, and a few steps along
            an unsure direction erase it. 0 = off (the original).
        thin_guard_classes: the guard keeps only the thin parts of these classes: ``"auto"``, those most of whose
            pixels are thin in the label maps being refined (pooled over a call's batch or list; over the whole
            folder in ``segfix refine``), so that the rule holds on any label space; or fixed class ids,
            ascending, of one label space (None: of every class). Meant for the classes that are thin by nature
            (:func:`segfix.thin_classes`), so that a thick class's ragged slivers are still refined.
        max_edge_distance: semantic refinement changes only the pixels that have another label within this many
            pixels (a square of side ``2 max_edge_distance + 1``) in the label map it refines, so that steps
            along an unsure field do not carry labels deep into segments the map had right. 0 = no limit (the
            original).
        ignore_index: label never moved or created.
    """

    boundary_threshold: float = 0.5
    direction_vote: bool = False
    min_direction_confidence: float = 0.0
    min_vote_share: float = 0.0
    semantic_scale: int = 2
    instance_scale: int = 1
    iterations: int = 1
    thin_guard: int = 0
    thin_guard_classes: tuple[int, ...] | str | None = None
    max_edge_distance: int = 0
    ignore_index: int | None = 255

    def __post_init__(self) -> None:
        _check_probability(self.boundary_threshold, "boundary_threshold")
        _check_probability(self.min_direction_confidence, "min_direction_confidence")
        _check_probability(self.min_vote_share, "min_vote_share")
        if not isinstance(self.direction_vote, (bool, np.bool_)):
            raise ValueError(f"direction_vote: expected True or False, got {self.direction_vote!r}")
        check_int_range(self.semantic_scale, "semantic_scale", 1, MAX_SCALE)
        check_int_range(self.instance_scale, "instance_scale", 1, MAX_SCALE)
        check_int_range(self.iterations, "iterations", 1, MAX_ITERATIONS)
        check_int_range(self.thin_guard, "thin_guard", 0, MAX_THIN_GUARD)
        object.__setattr__(self, "thin_guard_classes", check_guard_classes(self.thin_guard_classes))
        check_int_range(self.max_edge_distance, "max_edge_distance", 0, MAX_EDGE_DISTANCE)
        ignore = self.ignore_index
        if ignore is not None and not is_int(ignore):
            raise ValueError(f"ignore_index: expected an integer or None, got {ignore!r}")


GROUPS: dict[str, type] = {
    "preprocessing": Preprocessing,
    "inference": InferenceSettings,
    "decision": DecisionSettings,
}
"""The settings groups by their key in a nested ``config.json``."""

_FLAT_ALIASES = {("inference", "mode"): "inference"}  # fields whose flat name differs from their own

FLAT_NAMES: dict[str, tuple[str, str]] = {
    _FLAT_ALIASES.get((group, f.name), f.name): (group, f.name)
    for group, cls in GROUPS.items()
    for f in dataclasses.fields(cls)
}
"""Flat setting name (what ``SegFix.with_settings`` and ``--set`` take) -> (group key, field name)."""

FLAT_NAME_OF = {place: flat for flat, place in FLAT_NAMES.items()}

LEGACY_DIRECTION_THRESHOLD = "direction_threshold"
"""The name earlier versions gave both minimums; configs that hold it still load (:func:`split_config`)."""


@dataclass(frozen=True)
class ModelSettings:
    """The three settings groups of a model, together."""

    preprocessing: Preprocessing = Preprocessing()
    inference: InferenceSettings = InferenceSettings()
    decision: DecisionSettings = DecisionSettings()

    @classmethod
    def from_groups(cls, **groups: Any) -> ModelSettings:
        """Settings from groups as ``SegFix`` takes them: each an instance, a mapping of its fields, or None
        (the defaults).

        Raises:
            TypeError: a group of another kind (a mode string for ``inference`` gets a hint).
        """
        made: dict[str, Any] = {}
        for name, value in groups.items():
            kind = GROUPS[name]
            if value is None or isinstance(value, kind):
                made[name] = value if value is not None else kind()
            elif isinstance(value, Mapping):
                made[name] = kind(**value)
            else:
                hint = " (the mode is set with with_settings(inference='sliding'))" if name == "inference" else ""
                expected = f"{kind.__name__}(...) or a mapping of its fields"
                raise TypeError(f"{name}: expected {expected}, got {value!r}{hint}")
        return cls(**made)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> ModelSettings:
        """Settings from flat names (:data:`FLAT_NAMES`), the rest at their defaults."""
        return cls().replace(**flat)

    def replace(self, **flat: Any) -> ModelSettings:
        """These settings with some changed, by flat name (``flip_tta=True``, ``inference='sliding'``).

        Raises:
            TypeError: an unknown name. ValueError: an invalid value.
        """
        if LEGACY_DIRECTION_THRESHOLD in flat:
            raise TypeError(
                "direction_threshold: now two settings, min_direction_confidence (the argmax rule) and "
                "min_vote_share (direction_vote); pass the one you mean"
            )
        changes: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            if name not in FLAT_NAMES:
                raise TypeError(f"unknown setting {name!r}; expected one of {sorted(FLAT_NAMES)}")
            group, field_name = FLAT_NAMES[name]
            changes.setdefault(group, {})[field_name] = value
        return dataclasses.replace(
            self, **{group: dataclasses.replace(getattr(self, group), **values) for group, values in changes.items()}
        )

    def groups(self) -> dict[str, Any]:
        """``{"preprocessing": ..., "inference": ..., "decision": ...}``: the groups as ``SegFix`` takes them."""
        return {group: getattr(self, group) for group in GROUPS}

    def get(self, name: str) -> Any:
        """One setting by flat name."""
        group, field_name = FLAT_NAMES[name]
        return getattr(getattr(self, group), field_name)

    def flat(self) -> dict[str, Any]:
        """Every setting by flat name."""
        return {name: self.get(name) for name in FLAT_NAMES}

    def as_config(self) -> dict[str, dict[str, Any]]:
        """JSON-ready ``{group: {field: value}}`` (tuples as lists), as ``config.json`` nests them."""
        return {
            group: {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, group)).items()
            }
            for group in GROUPS
        }
