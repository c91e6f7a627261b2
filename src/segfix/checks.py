"""Every check of a user's arrays, tensors and values (the bounds, and the range check of a plain number, are in
:mod:`segfix.limits`, which imports no torch: the command line's parser uses them).

Every check raises ``ValueError`` or ``TypeError`` with a message that names what was expected and what
arrived. Private implementations trust their inputs; only public entry points call these.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np
import torch

from .limits import MAX_ITERATIONS, check_int_range, is_int

SUPPORTED_NUM_DIRECTIONS = (4, 8, 16)


LabelArray = TypeVar("LabelArray", np.ndarray, torch.Tensor)
"""A label map or mask stack, numpy or torch: functions typed with it return the type they were given."""

_INTEGER_NUMPY_KINDS = "iu"


def describe(x: Any) -> str:
    """Short description of an array-like for error messages: type, dtype and shape."""
    if isinstance(x, torch.Tensor):
        return f"torch.Tensor(dtype={x.dtype}, shape={tuple(x.shape)}, device={x.device})"
    if isinstance(x, np.ndarray):
        return f"numpy.ndarray(dtype={x.dtype}, shape={x.shape})"
    return type(x).__name__


def check_array(x: Any, name: str) -> None:
    """Require a numpy array or a torch tensor that holds data (not on the ``meta`` device)."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a numpy.ndarray or torch.Tensor, got {describe(x)}")
    if isinstance(x, torch.Tensor) and x.is_meta:
        raise ValueError(f"{name}: expected a tensor that holds values (cpu, cuda, ...), got {describe(x)}")


def is_integer_dtype(x: np.ndarray | torch.Tensor) -> bool:
    if isinstance(x, torch.Tensor):
        return not x.dtype.is_floating_point and not x.dtype.is_complex and x.dtype != torch.bool
    return x.dtype.kind in _INTEGER_NUMPY_KINDS


def check_integer(x: np.ndarray | torch.Tensor, name: str, *, allow_bool: bool = False) -> None:
    """Require an integer (optionally boolean) dtype."""
    is_bool = x.dtype == torch.bool if isinstance(x, torch.Tensor) else x.dtype == np.bool_
    if is_integer_dtype(x) or (allow_bool and is_bool):
        return
    kinds = "an integer or bool" if allow_bool else "an integer"
    raise TypeError(f"{name}: expected {kinds} dtype, got {describe(x)}")


def check_ndim(x: np.ndarray | torch.Tensor, name: str, allowed: tuple[int, ...], layout: str) -> None:
    """Require ``x.ndim`` in ``allowed``; ``layout`` spells the expected shapes, e.g. ``'(H, W) or (N, H, W)'``."""
    if x.ndim not in allowed:
        raise ValueError(f"{name}: expected shape {layout}, got {x.ndim}-D {describe(x)}")


def check_num_directions(num_directions: int) -> None:
    if num_directions not in SUPPORTED_NUM_DIRECTIONS:
        raise ValueError(f"num_directions: expected one of {SUPPORTED_NUM_DIRECTIONS}, got {num_directions!r}")


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> None:
    check_int_range(value, name, minimum)


def check_iterations(value: Any) -> int:
    """Require an integer in ``1 ..`` :data:`MAX_ITERATIONS`; returns it as an int."""
    return check_int_range(value, "iterations", 1, MAX_ITERATIONS)


def check_steps(scale: Any, iterations: Any) -> None:
    """A call's ``scale`` and ``iterations`` overrides: each None (the settings') or valid."""
    if scale is not None:
        check_scale(scale)
    if iterations is not None:
        check_iterations(iterations)


def num_elements(x: np.ndarray | torch.Tensor) -> int:
    """Number of elements of a numpy array or a tensor."""
    return x.numel() if isinstance(x, torch.Tensor) else int(x.size)


def check_labels_nonnegative(labels: np.ndarray | torch.Tensor, name: str, ignore_index: int | None) -> None:
    """Reject negative labels other than ``ignore_index`` (which may itself be negative, e.g. -1)."""
    unsigned = value_range(labels)[0] >= 0
    if unsigned or num_elements(labels) == 0:
        return
    negative = labels < 0
    if ignore_index is not None and ignore_index < 0:
        negative &= labels != ignore_index
    if bool(negative.any()):
        bad = int(labels[negative].min())
        raise ValueError(f"{name}: expected class ids >= 0 or the ignore index {ignore_index}, found {bad}")


def check_class_ids(value: Any, name: str) -> tuple[int, ...]:
    """A list of class ids -> a sorted tuple without repeats; each a non-negative integer."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        raise ValueError(f"{name}: expected a list of class ids, got {value!r}")
    for v in value:
        if not is_int(v) or v < 0:
            raise ValueError(f"{name}: expected non-negative integer class ids, got {value!r}")
    return tuple(sorted({int(v) for v in value}))


THIN_CLASSES_FROM_LABELS = "auto"
"""``thin_guard_classes="auto"``: the thin classes are read from the label maps being refined (those most of
whose pixels are thin there), never from class ids fixed in a model's config: the same rule on any label space."""


def check_guard_classes(value: Any, name: str = "thin_guard_classes") -> tuple[int, ...] | str | None:
    """None (every class), ``"auto"`` (:data:`THIN_CLASSES_FROM_LABELS`) or a list of class ids (sorted)."""
    if value is None or value == THIN_CLASSES_FROM_LABELS:
        return value
    if isinstance(value, str):
        raise ValueError(f"{name}: expected None, 'auto' or a list of class ids, got {value!r}")
    return check_class_ids(value, name)


def check_scale(value: Any, name: str = "scale") -> int:
    """Require a positive whole number (an int, or a float holding one); returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        raise ValueError(f"{name}: expected a positive integer (labels move by whole pixels), got {value!r}")
    if value != int(value) or value < 1:
        raise ValueError(f"{name}: expected a positive integer (labels move by whole pixels), got {value!r}")
    return int(value)


def value_range(x: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """The smallest and largest value the integer (or bool) dtype of ``x`` can hold."""
    if x.dtype in (torch.bool, np.bool_):
        return 0, 1
    info = torch.iinfo(x.dtype) if isinstance(x, torch.Tensor) else np.iinfo(x.dtype)
    return int(info.min), int(info.max)


def effective_ignore(labels: np.ndarray | torch.Tensor, ignore_index: int | None) -> int | None:
    """``ignore_index``, or None when no element of ``labels``' dtype can hold it (256 on uint8, -1 on
    unsigned maps): then no pixel is ignore. Comparing with such a value would wrap around in torch."""
    if ignore_index is None:
        return None
    if not is_int(ignore_index):
        raise TypeError(f"ignore_index: expected an integer or None, got {ignore_index!r}")
    low, high = value_range(labels)
    return int(ignore_index) if low <= ignore_index <= high else None


def native_byte_order(x: np.ndarray) -> np.ndarray:
    """``x`` itself, or a copy in the machine's byte order (compiled kernels and torch need native data)."""
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def as_tensor(array: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A tensor over ``array``'s memory where torch can share it, else over a copy; tensors pass through (moved
    to ``device`` if one is given)."""
    if isinstance(array, torch.Tensor):
        return array.to(device) if device is not None else array
    # torch cannot share read-only memory (memory-mapped files, decoded images), negative strides (a
    # mirrored view) or foreign byte order: those arrive as a copy.
    array = native_byte_order(array)
    if not array.flags.writeable or any(stride < 0 for stride in array.strides):
        array = np.array(array, order="C", copy=True)
    return torch.as_tensor(array, device=device)


def as_numpy(array: Any) -> np.ndarray:
    """A numpy array of ``array``: tensors are detached and brought to the CPU, arrays pass through."""
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


_WIDER = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


def computable(labels: torch.Tensor, name: str) -> torch.Tensor:
    """``labels`` in a dtype that torch's indexing kernels support: uint16/32/64 are widened to a signed
    type (torch has no index_put for them). uint64 values beyond int64 are refused."""
    wider = _WIDER.get(labels.dtype)
    if wider is None:
        return labels
    widened = labels.to(wider)
    # torch has no comparisons on uint64: values of 2**63 and more show up as negative after the cast
    if labels.dtype == torch.uint64 and bool((widened < 0).any()):
        raise ValueError(f"{name}: expected class ids below 2**63, found larger values in {describe(labels)}")
    return widened


def bounded_offsets(offsets: np.ndarray | torch.Tensor, limit: int) -> np.ndarray | torch.Tensor:
    """Offsets clipped to ``[-limit, limit]`` in a signed type, for those whose dtype could overflow the index
    arithmetic (int32 and wider, any unsigned type but uint8). Clipping at ``limit`` >= the image size
    changes no result, since every position is clamped to the image anyway."""
    if isinstance(offsets, torch.Tensor):
        if offsets.dtype in (torch.int8, torch.int16, torch.uint8):
            return offsets
        wide = offsets.to(torch.int64)
        if offsets.dtype == torch.uint64:  # values >= 2**63 wrap to negative in the cast: they are huge
            wide = torch.where(wide < 0, limit, wide)
        return wide.clamp(-limit, limit)
    if offsets.dtype in (np.int8, np.int16, np.uint8):
        return offsets
    if offsets.dtype.kind == "u":
        return np.minimum(offsets, limit).astype(np.int64)
    return np.clip(offsets, -limit, limit).astype(np.int64)


def check_label_map(label_map: np.ndarray | torch.Tensor, ignore_index: int | None) -> int | None:
    """A semantic label map ``(H, W)`` or ``(N, H, W)`` of integer class ids (negative only for the ignore
    label); returns the effective ignore label (:func:`effective_ignore`)."""
    check_array(label_map, "label_map")
    if not is_integer_dtype(label_map):
        raise TypeError(f"label_map: expected an integer dtype, got {describe(label_map)}")
    check_ndim(label_map, "label_map", (2, 3), "(H, W) or (N, H, W)")
    ignore_index = effective_ignore(label_map, ignore_index)
    check_labels_nonnegative(label_map, "label_map", ignore_index)
    return ignore_index


def check_class_range(labels: np.ndarray, name: str, num_classes: int, ignore_index: int | None) -> None:
    """Refuse a label that is neither a class ``0 .. num_classes - 1`` nor the ignore label: scoring it would
    drop those pixels (or count them wrong) and print plausible numbers for a wrong ``num_classes``."""
    if labels.size == 0 or int(labels.max()) < num_classes:
        return
    outside = labels >= num_classes
    if ignore_index is not None:
        outside &= labels != ignore_index
    if outside.any():
        found = np.unique(labels[outside])
        shown = ", ".join(str(int(v)) for v in found[:5]) + (", ..." if found.size > 5 else "")
        raise ValueError(
            f"{name}: expected class ids 0..{num_classes - 1} or the ignore label {ignore_index}, found {shown} "
            f"(is num_classes={num_classes} too small, or the ignore label not {ignore_index}?)"
        )


def check_device_available(device: Any, name: str, fallback: str) -> torch.device:
    """``device`` (a name or ``torch.device``) as a ``torch.device``, refused with a message naming ``name`` when
    it cannot run here (no CUDA GPU or MPS, an index past the last GPU), and ``fallback`` as what to do instead.

    Raises:
        ValueError: an unknown device name, or one this machine lacks.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: expected cpu, cuda, cuda:N or mps, got {device!r}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"{name}: no CUDA GPU is available here (torch.cuda.device_count() is 0); {fallback}")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{name}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: MPS is not available here; {fallback}")
    return parsed
