"""The refinement field: the one value every route of refinement goes through.

A network's outputs become a :class:`RefinementField` in one decision step
(:func:`segfix.prediction.decision.decide`); offset files become one too (:func:`field_from_offsets`).
:func:`apply_field` applies a field to a semantic label map and :func:`apply_field_to_instances` to a stack of
instance masks. ``SegFix.refine``, ``SegFix.refine_prediction``,
the folder jobs, offset files and the pictures all go through these, so the same model gives the same result by
every route.

A field stays on the device it was computed on; applying it to numpy labels from a CUDA field moves the labels to
the device (small) rather than the field to the host. It holds direction probabilities for its moving pixels
alone (``(K, D)``), never a ``(N, D, H, W)`` volume: the decision samples the network's outputs at those
pixels only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..checks import (
    as_numpy,
    as_tensor,
    check_guard_classes,
    check_iterations,
    check_label_map,
    check_positive_int,
    check_scale,
    computable,
    describe,
    is_integer_dtype,
)
from ..limits import MAX_EDGE_DISTANCE, check_int_range
from .edges import unchecked_far_from_edges
from .refine import refine_instances, unchecked_refine_semantic
from .thin import thin_parts_of_thin_classes, unchecked_thin_parts
from .vote import unchecked_vote_labels

__all__ = ["RefinementField", "apply_field", "apply_field_to_instances", "field_from_offsets"]


@dataclass(frozen=True)
class RefinementField:
    """Where each pixel takes its label from, for one image or a batch of images of one size.

    Attributes:
        moving: bool ``(N, H, W)``, the pixels that may change.
        offsets: int8 ``(N, 2, H, W)``, channel order ``(dy, dx)``: the argmax direction's step, zero where
            not moving.
        direction_prob: float32 ``(K, D)``, the direction probabilities of the K moving pixels in row-major
            order (the order of ``moving.nonzero()``), needed by the vote (else None).
        scale: the step is ``scale * offset`` pixels.
        iterations: steps along the field.
        direction_vote: each moving pixel takes the label most of its direction probability points at
            (:func:`segfix.vote_labels`), rather than following its argmax offset.
        min_vote_share: with ``'vote'``, a pixel changes only when the winning label's pooled probability exceeds
            this.
        thin_guard: :func:`apply_field` leaves the thin parts of the label map (:func:`segfix.thin_parts` of this
            radius, found once on the map given) as they are; 0 = off. Instance masks ignore it.
        thin_guard_classes: the guard keeps only the thin parts of these class ids (None: of every class;
            ``"auto"``: of the classes most of whose pixels are thin in the label maps it is applied to).
        max_edge_distance: :func:`apply_field` changes only the pixels that have another label within this many
            pixels in the label map given (:func:`segfix.ops.edges.far_from_edges`), so that labels are not
            carried deep into segments; 0 = no limit. Instance masks ignore it.
    """

    moving: Any
    offsets: Any
    direction_prob: Any = None
    scale: int = 2
    iterations: int = 1
    direction_vote: bool = False
    min_vote_share: float = 0.0
    thin_guard: int = 0
    thin_guard_classes: tuple[int, ...] | str | None = None
    max_edge_distance: int = 0

    def __post_init__(self) -> None:
        # Checked here, once: apply_field hands these to the inner functions, which trust them.
        check_positive_int(self.thin_guard, "thin_guard", minimum=0)
        check_int_range(self.max_edge_distance, "max_edge_distance", 0, MAX_EDGE_DISTANCE)
        object.__setattr__(self, "scale", check_scale(self.scale))
        object.__setattr__(self, "iterations", check_iterations(self.iterations))
        if isinstance(self.min_vote_share, bool) or not isinstance(self.min_vote_share, (int, float, np.floating)):
            raise TypeError(f"min_vote_share: expected a number in [0, 1), got {self.min_vote_share!r}")
        if not 0 <= self.min_vote_share < 1:
            raise ValueError(f"min_vote_share: expected a number in [0, 1), got {self.min_vote_share!r}")
        if not is_integer_dtype(self.offsets) or self.moving.dtype not in (np.bool_, torch.bool):
            raise TypeError(
                f"expected bool moving and integer offsets, got {describe(self.moving)} and {describe(self.offsets)}"
            )
        object.__setattr__(self, "thin_guard_classes", check_guard_classes(self.thin_guard_classes))
        if not isinstance(self.direction_vote, (bool, np.bool_)):
            raise TypeError(f"direction_vote: expected True or False, got {self.direction_vote!r}")
        if self.direction_vote and self.direction_prob is None:
            raise ValueError("direction_vote needs direction_prob (the direction probabilities)")
        if self.moving.ndim != 3 or tuple(self.offsets.shape) != (self.moving.shape[0], 2, *self.moving.shape[1:]):
            raise ValueError(
                f"expected moving (N, H, W) and offsets (N, 2, H, W), got {describe(self.moving)} and "
                f"{describe(self.offsets)}"
            )
        if self.direction_prob is not None and (
            self.direction_prob.ndim != 2 or self.direction_prob.shape[0] != int(self.moving.sum())
        ):
            raise ValueError(
                f"direction_prob: expected (K, D) for the K={int(self.moving.sum())} moving pixels, got "
                f"{describe(self.direction_prob)}"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image the field was computed for."""
        return int(self.moving.shape[-2]), int(self.moving.shape[-1])

    def __len__(self) -> int:
        return int(self.moving.shape[0])

    def with_steps(self, scale: Any = None, iterations: Any = None) -> RefinementField:
        """This field with another ``scale`` or ``iterations`` (None keeps its own), validated."""
        changes: dict[str, Any] = {}
        if scale is not None:
            changes["scale"] = check_scale(scale)
        if iterations is not None:
            changes["iterations"] = check_iterations(iterations)
        return dataclasses.replace(self, **changes) if changes else self

    def frozen_at(self, pixels: Any) -> RefinementField:
        """This field with the ``pixels`` (bool ``(N, H, W)``, like ``moving``) no longer moving."""
        pixels = torch.as_tensor(pixels) if isinstance(self.moving, torch.Tensor) else np.asarray(pixels)
        if tuple(pixels.shape) != tuple(self.moving.shape):
            raise ValueError(f"pixels: expected a bool mask {tuple(self.moving.shape)}, got {describe(pixels)}")
        if isinstance(self.moving, torch.Tensor):
            stopped = pixels.to(self.moving.device, torch.bool) & self.moving
        else:
            stopped = pixels.astype(bool, copy=False) & self.moving
        if not stopped.any():  # nothing that moves is frozen: the same field (often so: a map without thin parts)
            return self
        offsets = self.offsets * ~stopped[:, None]  # int8 times bool stays int8
        moving = self.moving ^ stopped
        prob = self.direction_prob
        if prob is not None:  # the rows of the pixels that still move, in the same row-major order
            prob = prob[~stopped[self.moving]]
        return dataclasses.replace(self, moving=moving, offsets=offsets, direction_prob=prob)

    def to(self, device: torch.device | str) -> RefinementField:
        """The field as torch tensors on ``device``."""
        return dataclasses.replace(
            self,
            moving=as_tensor(self.moving, device),
            offsets=as_tensor(self.offsets, device),
            direction_prob=None if self.direction_prob is None else as_tensor(self.direction_prob, device),
        )

    def numpy(self) -> RefinementField:
        """The field as numpy arrays (copied off the device)."""
        return dataclasses.replace(
            self,
            moving=as_numpy(self.moving),
            offsets=as_numpy(self.offsets),
            direction_prob=None if self.direction_prob is None else as_numpy(self.direction_prob),
        )

    def __getitem__(self, index: int) -> RefinementField:
        """The field of image ``index``, as a batch of one."""
        index = range(len(self))[index]  # negative indices count from the end; out of range raises IndexError
        prob = self.direction_prob
        if prob is not None:  # the rows of this image's moving pixels: they follow those of the images before
            first = int(self.moving[:index].sum())
            prob = prob[first : first + int(self.moving[index].sum())]
        return dataclasses.replace(
            self, moving=self.moving[index : index + 1], offsets=self.offsets[index : index + 1], direction_prob=prob
        )


def concat_fields(fields: list[RefinementField]) -> RefinementField:
    """Fields of images of one size, computed with the same settings -> one batched field."""
    if len(fields) == 1:
        return fields[0]
    first = fields[0]
    prob = None if first.direction_prob is None else torch.cat([f.direction_prob for f in fields])
    return dataclasses.replace(
        first,
        moving=torch.cat([f.moving for f in fields]),
        offsets=torch.cat([f.offsets for f in fields]),
        direction_prob=prob,
    )


def field_from_offsets(
    offsets: np.ndarray | torch.Tensor,
    *,
    scale: int,
    iterations: int = 1,
    direction_vote: bool = False,
    min_vote_share: float = 0.0,
    vote_prob: np.ndarray | None = None,
    thin_guard: int = 0,
    thin_guard_classes: Sequence[int] | str | None = None,
    max_edge_distance: int = 0,
) -> RefinementField:
    """A field from stored offsets ``(2, H, W)`` or ``(N, 2, H, W)`` (e.g.
    :func:`segfix.jobs.formats.read_offset_file`).

    ``vote_prob``: for the vote (``direction_vote``), the direction probabilities of the moving pixels
    (``offsets != 0``), ``(K, D)`` in row-major pixel order, as ``segfix offsets`` stores them. ``thin_guard``,
    ``thin_guard_classes``, ``max_edge_distance``: see :class:`RefinementField`.
    """
    offsets = offsets[None] if offsets.ndim == 3 else offsets
    moving = (offsets != 0).any(1)
    prob: Any = None
    if direction_vote:
        if vote_prob is None:
            raise ValueError("direction_vote needs the stored direction probabilities (vote_prob)")
        count = int(moving.sum())
        if vote_prob.ndim != 2 or vote_prob.shape[0] != count:
            raise ValueError(f"vote_prob: expected ({count}, D) for the {count} moving pixels, got {vote_prob.shape}")
        prob = np.ascontiguousarray(vote_prob, dtype=np.float32)
        if isinstance(offsets, torch.Tensor):
            prob = torch.from_numpy(prob).to(offsets.device)
    classes = check_guard_classes(thin_guard_classes)
    return RefinementField(
        moving, offsets, prob, scale, iterations, direction_vote, min_vote_share, thin_guard, classes, max_edge_distance
    )


def check_field_labels(labels: Any, field: RefinementField, *, single: bool, instance: bool = False) -> None:
    """``labels`` against a ``field`` predicted for one image (``single``) or a batch: same size, one map per
    image.

    Raises:
        ValueError: naming the mismatch.
    """
    if tuple(field.size) != tuple(labels.shape[-2:]):
        raise ValueError(
            f"label map size {tuple(labels.shape[-2:])} does not match the image size "
            f"{tuple(field.size)}; resize the label map to the image (nearest neighbour)"
        )
    if instance:
        if not single:
            raise ValueError("refine_instances: expected one image for a stack of masks, got a batch")
        return
    if labels.ndim == 3 and single and labels.shape[0] != 1:
        raise ValueError(f"label_map: got {labels.shape[0]} maps for one image; pass a batch of images")
    if labels.ndim == 2 and not single:
        raise ValueError(f"label_map: got one map {tuple(labels.shape)} for a batch of {len(field)} images")


def apply_field(field: RefinementField, label_map: Any, *, ignore_index: int | None = 255) -> Any:
    """Refine a semantic ``label_map`` ``(H, W)`` (a field of one image) or ``(N, H, W)`` by ``field``'s rule: its
    argmax offsets, or the vote.

    This is the door: the map is checked here once (an integer array or tensor of the field's size, no negative
    label but the ignore label), and the inner functions (``unchecked_*``) trust it.

    Returns:
        The refined map: same type, dtype, shape (and device) as ``label_map``.
    """
    ignore_index = check_label_map(label_map, ignore_index)
    labels, back = _labels_where_field_is(label_map, field)
    field = _field_where_labels_are(field, labels)
    check_field_labels(labels, field, single=len(field) == 1)

    def own(x: Any) -> Any:  # the field's arrays in the layout of the labels: (H, W) maps drop the batch axis
        return x[0] if labels.ndim == 2 else x

    field = _frozen_by_label_map(field, labels, ignore_index)
    if not field.direction_vote:
        refined = unchecked_refine_semantic(
            labels, own(field.offsets), scale=field.scale, iterations=field.iterations, ignore_index=ignore_index
        )
    else:
        refined = unchecked_vote_labels(
            labels,
            field.direction_prob,
            own(field.moving),
            scale=field.scale,
            min_vote_share=field.min_vote_share,
            ignore_index=ignore_index,
            iterations=field.iterations,
        )
    return back(refined)


def freeze_by_label_map(field: RefinementField, label_map: Any, *, ignore_index: int | None = 255) -> RefinementField:
    """The field with the guards that read the label map spent: the thin parts of ``label_map`` (``(H, W)`` for a
    field of one image, or ``(N, H, W)``; by ``thin_guard`` and ``thin_guard_classes``) and its pixels farther than
    ``max_edge_distance`` from another label no longer move, and both settings are 0. Applying the result step by
    step, each step on the last one's output, gives what :func:`apply_field` gives with all the steps at once: the
    guards read the map they were given, never a half-refined one."""
    ignore_index = check_label_map(label_map, ignore_index)
    labels, _ = _labels_where_field_is(label_map, field)
    field = _field_where_labels_are(field, labels)
    check_field_labels(labels, field, single=len(field) == 1)
    frozen = _frozen_by_label_map(field, labels, ignore_index)
    return dataclasses.replace(frozen, thin_guard=0, max_edge_distance=0)


def _frozen_by_label_map(field: RefinementField, labels: Any, ignore_index: int | None) -> RefinementField:
    return _frozen_far_from_edges(_frozen_at_thin_parts(field, labels, ignore_index), labels)


def _frozen_at_thin_parts(field: RefinementField, labels: Any, ignore_index: int | None) -> RefinementField:
    if not field.thin_guard:
        return field
    classes = field.thin_guard_classes
    if isinstance(classes, str):  # "auto": the label space's own thin classes, read from these maps
        thin = thin_parts_of_thin_classes(labels, field.thin_guard, ignore_index=ignore_index)
    else:
        thin = unchecked_thin_parts(labels, field.thin_guard, ignore_index=ignore_index, classes=classes)
    return field.frozen_at(thin if labels.ndim == 3 else thin[None])


def _frozen_far_from_edges(field: RefinementField, labels: Any) -> RefinementField:
    if not field.max_edge_distance:
        return field
    maps = labels if labels.ndim == 3 else labels[None]
    if isinstance(maps, torch.Tensor):
        maps = computable(maps, "label_map")
    return field.frozen_at(unchecked_far_from_edges(maps, field.max_edge_distance))


def apply_field_to_instances(
    field: RefinementField, masks: Any, *, scores: Any = None, resolve_overlaps: bool = False
) -> Any:
    """Refine instance masks ``(K, H, W)`` of one image by the field's offsets (see
    :func:`segfix.refine_instances`)."""
    if len(field) != 1:
        raise ValueError(f"refine_instances: expected the field of one image, got {len(field)}")
    field = _field_where_labels_are(field, masks)
    return refine_instances(
        masks,
        field.offsets[0],
        scale=field.scale,
        iterations=field.iterations,
        scores=scores,
        resolve_overlaps=resolve_overlaps,
    )


_DEVICE_LABEL_DTYPES = (np.uint8, np.int8, np.int16, np.int32, np.int64)


def _labels_where_field_is(label_map: Any, field: RefinementField):
    """Numpy labels meeting a field on an accelerator go to the device (one int per pixel) rather than the
    field to the host; -> (labels, a function that returns a result in the caller's type)."""
    device = field.moving.device if isinstance(field.moving, torch.Tensor) else None
    if (
        isinstance(label_map, np.ndarray)
        and device is not None
        and device.type != "cpu"
        and label_map.dtype.type in _DEVICE_LABEL_DTYPES
    ):
        dtype = label_map.dtype
        tensor = as_tensor(label_map, device)
        return tensor, lambda out: out.cpu().numpy().astype(dtype, copy=False)
    return label_map, lambda out: out


def _field_where_labels_are(field: RefinementField, labels: Any) -> RefinementField:
    if isinstance(labels, torch.Tensor):
        return field.to(labels.device)
    return field.numpy()
