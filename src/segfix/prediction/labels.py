"""The label space: how a caller's label maps become the class ids a field is applied to, and come back.

:func:`label_map_as_ids` takes what ``SegFix.refine`` takes (integer numpy or torch, a PIL label image, a bool mask)
and gives the ids with a function that returns refined ids in the caller's form (PIL in its mode and palette, bool as
bool). :class:`LabelSpace` maps a stored encoding (Cityscapes labelIds, ADE20K's 0 = other, a stored ignore value)
to class ids with 255 = ignore and back, losslessly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..checks import describe
from ..data.files import label_image, label_style
from ..data.registry import LABEL_FORMATS, decode_labels, encode_labels
from ..limits import is_int

__all__ = ["LabelSpace", "label_map_as_ids"]

CLASS_IGNORE = 255
"""The ignore label in class space, whatever a stored encoding calls it."""


@dataclass(frozen=True)
class LabelSpace:
    """How stored label values relate to class ids.

    Attributes:
        label_format: ``'trainid'``, ``'cityscapes-labelid'`` or ``'ade20k'``
            (:data:`segfix.data.registry.LABEL_FORMATS`); None: the values are class ids as they are, and
            ``ignore_index`` says which one is ignored.
        stored_ignore: with a format, a stored value that means ignore besides the format's own.
        ignore_index: without a format, the label never moved or created (None: none).
    """

    label_format: str | None = None
    stored_ignore: int | None = None
    ignore_index: int | None = CLASS_IGNORE

    def __post_init__(self) -> None:
        if self.label_format is not None and self.label_format not in LABEL_FORMATS:
            raise ValueError(f"label_format: expected None or one of {LABEL_FORMATS}, got {self.label_format!r}")
        for name in ("stored_ignore", "ignore_index"):
            value = getattr(self, name)
            if value is not None and not is_int(value):
                raise ValueError(f"{name}: expected an integer or None, got {value!r}")

    @property
    def class_ignore(self) -> int | None:
        """The ignore label of the class ids a field is applied to."""
        return CLASS_IGNORE if self.label_format is not None else self.ignore_index

    def encode(self, stored: Any) -> Any:
        """Stored values -> class ids (the same array where there is no format)."""
        return stored if self.label_format is None else encode_labels(stored, self.label_format, self.stored_ignore)

    def decode(self, classes: Any, stored: Any) -> Any:
        """Refined class ids -> the stored encoding, ignore pixels as they were stored."""
        return classes if self.label_format is None else decode_labels(classes, stored, self.label_format)


def require_label_array(labels: Any, name: str) -> None:
    """Refuse anything but an integer numpy array or tensor; logits get a hint to take their argmax."""
    if not isinstance(labels, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a numpy.ndarray or torch.Tensor, got {describe(labels)}")
    floating = labels.dtype.is_floating_point if isinstance(labels, torch.Tensor) else labels.dtype.kind == "f"
    if floating:
        axis = "1" if labels.ndim == 4 else "0"
        raise TypeError(
            f"{name}: expected integer class ids, got {describe(labels)}; these look like a model's logits or "
            f"scores: pass their argmax over the class axis (e.g. .argmax({axis}))"
        )


def label_image_to_array(labels: Image.Image) -> tuple[np.ndarray, Callable[[np.ndarray], Image.Image]]:
    """A PIL label map (mode L, P, 1, I or I;16) -> (its ids as an array, a function that turns refined ids back
    into an image of the same mode, palette and transparency)."""
    style = label_style(labels, "label_map")
    return np.asarray(labels), lambda refined: label_image(refined, style)


def label_map_as_ids(label_map: Any) -> tuple[Any, Callable[[Any], Any]]:
    """A label map as ``SegFix.refine`` takes it -> (integer ids, numpy or torch; a function that gives a refined
    map back in the caller's form). PIL label images come back in their mode and palette, bool masks as bool;
    integer arrays and tensors pass as they are. Anything else is refused (logits with a hint)."""
    if isinstance(label_map, Image.Image):
        return label_image_to_array(label_map)
    if isinstance(label_map, torch.Tensor) and label_map.dtype == torch.bool:
        return label_map.to(torch.uint8), lambda refined: refined.bool()
    if isinstance(label_map, np.ndarray) and label_map.dtype == np.bool_:
        return label_map.astype(np.uint8), lambda refined: refined.astype(bool)
    require_label_array(label_map, "label_map")
    return label_map, lambda refined: refined
