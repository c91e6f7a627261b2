"""Validation helpers shared by the public functions.

Every check raises ``ValueError`` or ``TypeError`` with a message that names what was expected and what
arrived. Private implementations trust their inputs; only public entry points call these.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SUPPORTED_NUM_DIRECTIONS = (4, 8, 16)

_INTEGER_NUMPY_KINDS = "iu"


def describe(x: Any) -> str:
    """Short description of an array-like for error messages: type, dtype and shape."""
    if isinstance(x, torch.Tensor):
        return f"torch.Tensor(dtype={x.dtype}, shape={tuple(x.shape)}, device={x.device})"
    if isinstance(x, np.ndarray):
        return f"numpy.ndarray(dtype={x.dtype}, shape={x.shape})"
    return type(x).__name__


def check_array(x: Any, name: str) -> None:
    """Require a numpy array or a torch tensor."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a numpy.ndarray or torch.Tensor, got {describe(x)}")


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
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def check_labels_nonnegative(labels: np.ndarray | torch.Tensor, name: str, ignore_index: int | None) -> None:
    """Reject negative labels other than ``ignore_index`` (which may itself be negative, e.g. -1)."""
    is_torch = isinstance(labels, torch.Tensor)
    unsigned = labels.dtype in (torch.uint8, torch.bool) if is_torch else labels.dtype.kind in "ub"
    if unsigned or (labels.numel() if is_torch else labels.size) == 0:
        return
    negative = labels < 0
    if ignore_index is not None and ignore_index < 0:
        negative &= labels != ignore_index
    if bool(negative.any()):
        bad = int(labels[negative].min())
        raise ValueError(f"{name}: expected class ids >= 0 or the ignore index {ignore_index}, found {bad}")
