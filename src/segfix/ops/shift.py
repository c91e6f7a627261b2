"""Exact integer label shifting: ``out[p] = labels[clamp(p + scale * offset[p])]``.

This is the operation SegFix applies to a coarse label map. It is a pure gather: it never interpolates, so
it can only copy labels that are already in its input, and a zero offset leaves a pixel untouched. (The
original ``scripts/cityscapes/segfix.py`` used bilinear ``grid_sample`` on class ids, which on modern
PyTorch moves pixels even at zero offset and blends ids into classes that were never predicted.)

Two implementations share one specification:

* numpy: with numba (a dependency) a compiled single pass whose cost is close to copying the label map
  once; in an environment without numba, a vectorised numpy gather over the pixels whose offset is
  non-zero (the boundary band, typically 5-15 % of an image).
* torch: CPU tensors go through the same compiled kernel, reading their memory in place; on other devices
  (CUDA, MPS) a dense gather keeps tensors where they are.

Both give bit-identical results; ``tests/ops/test_shift.py`` holds them to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..checks import (
    LabelArray,
    bounded_offsets,
    check_array,
    check_integer,
    check_iterations,
    check_ndim,
    check_scale,
    describe,
    native_byte_order,
)
from . import kernels

__all__ = ["BACKENDS", "shift_labels"]

"""Most steps :func:`shift_labels` takes (the paper uses one or two; each step is a pass over the map)."""


BACKENDS = ("auto", "numba", "numpy", "torch")
"""Implementations :func:`shift_labels` can use; all give bit-identical results."""


def shift_labels(
    labels: LabelArray,
    offsets: np.ndarray | torch.Tensor,
    *,
    scale: int = 1,
    iterations: int = 1,
    backend: str = "auto",
) -> LabelArray:
    """Move each pixel's label along an integer offset field, clamped to the image.

    With ``iterations == 1``: ``out[p] = labels[clamp(p + scale * offsets[p])]``. With ``iterations = T > 1``
    the position follows the field step by step, ``p_{t+1} = clamp(p_t + scale * offsets[p_t])``, and
    ``out[p] = labels[p_T]`` (the paper's alternative to a larger scale: a boundary pixel walks into the
    interior until it reaches a pixel whose offset is zero).

    Args:
        labels: integer or bool label map(s), shape ``(H, W)`` or ``(N, H, W)``; uint8, int8, int16, int32,
            int64 or bool.
        offsets: integer offsets, channel order ``(dy, dx)``, shape ``(2, H, W)`` for a single map, or
            ``(N, 2, H, W)`` / ``(2, H, W)`` (shared by all N) for a batch. Same library (and device) as labels.
        scale: integer multiplier applied to every offset (2 for SegFix's semantic refinement).
        iterations: number of steps along the field, at most :data:`MAX_ITERATIONS`.
        backend: ``'auto'`` (the compiled numba kernel for numpy arrays and CPU tensors, the dense torch gather on
            other devices), ``'numba'``, ``'numpy'`` (the vectorised fallback used where numba is missing) or
            ``'torch'`` (the dense gather, tensors only). For benchmarks and tests: the results are identical.

    Returns:
        The shifted labels: same type, dtype, shape and device as ``labels`` (a new array; the input is not
        modified). Every output value occurs in the input.

    Raises:
        TypeError: non-integer labels or offsets, or numpy mixed with torch.
        ValueError: wrong ndim, mismatched shapes or devices, non-positive scale or iterations.

    Example:
        >>> import numpy as np, segfix
        >>> labels = np.array([[1, 1, 2, 2]], np.uint8)
        >>> offsets = np.zeros((2, 1, 4), np.int8); offsets[1, 0, 1] = 1  # pixel (0, 1) looks one step right
        >>> segfix.shift_labels(labels, offsets)
        array([[1, 2, 2, 2]], dtype=uint8)
    """
    scale = check_scale(scale)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "numba" and not kernels.HAVE_NUMBA:
        raise ImportError("backend 'numba': numba is not installed (pip install numba)")
    check_iterations(iterations)
    field: Any = _check_shift_inputs(labels, offsets)  # numpy with numpy labels, torch with torch ones
    return unchecked_shift_labels(labels, field, scale=scale, iterations=int(iterations), backend=backend)


def unchecked_shift_labels(
    labels: LabelArray, offsets: Any, *, scale: int, iterations: int, backend: str = "auto"
) -> LabelArray:
    """:func:`shift_labels` on inputs its caller has checked (the door, e.g.
    :func:`segfix.ops.field.apply_field`): integer labels and offsets of matching shapes, in one library and on one
    device, a positive int ``scale``, ``iterations`` in bounds, a known ``backend``. Nothing is checked again."""
    if (labels.numel() if isinstance(labels, torch.Tensor) else labels.size) == 0:
        return labels.clone() if isinstance(labels, torch.Tensor) else labels.copy()
    field: Any = offsets
    # A step longer than the image lands on its border whatever its length: bounding the scale and the
    # offsets by the image size keeps every index computation far from integer overflow.
    limit = max(labels.shape[-2:])
    scale = min(scale, limit)
    field = bounded_offsets(field, limit)
    if isinstance(labels, torch.Tensor):
        host = backend in ("numba", "numpy") or (
            backend == "auto" and labels.device.type == "cpu" and kernels.HAVE_NUMBA
        )
        if host:
            if labels.device.type != "cpu":
                raise ValueError(f"backend {backend!r}: expected CPU tensors, got {labels.device}; use 'torch'")
            # The compiled kernel reads the tensors' memory in place: on the CPU the dense int64 gather below
            # costs about 70 times as much.
            use_numba = None if backend == "auto" else backend == "numba"
            shifted = _shift_numpy(labels.numpy(), field.numpy(), scale, int(iterations), use_numba=use_numba)
            return torch.from_numpy(shifted)
        return _shift_torch(labels, field, scale, int(iterations))
    if backend == "torch":
        raise TypeError(f"backend 'torch': expected torch tensors, got {describe(labels)}")
    native = native_byte_order(labels)
    use_numba = None if backend == "auto" else backend == "numba"
    out = _shift_numpy(native, native_byte_order(field), scale, int(iterations), use_numba=use_numba)
    return out if native is labels else out.astype(labels.dtype)


def _check_shift_inputs(labels: Any, offsets: Any) -> Any:
    """Validate and return offsets; the caller's arrays are never modified."""
    check_array(labels, "labels")
    check_array(offsets, "offsets")
    if isinstance(labels, torch.Tensor) != isinstance(offsets, torch.Tensor):
        raise TypeError(
            f"labels and offsets must both be numpy or both torch, got {describe(labels)} and {describe(offsets)}"
        )
    check_integer(labels, "labels", allow_bool=True)
    check_integer(offsets, "offsets")
    check_ndim(labels, "labels", (2, 3), "(H, W) or (N, H, W)")
    if labels.ndim == 2:
        expected = (2, *labels.shape)
        if tuple(offsets.shape) != expected:
            raise ValueError(
                f"offsets: expected shape (2, H, W) = {expected} for labels {describe(labels)}, got {describe(offsets)}"
            )
    else:
        n, h, w = labels.shape
        if tuple(offsets.shape) not in ((n, 2, h, w), (2, h, w)):
            raise ValueError(
                f"offsets: expected shape (N, 2, H, W) = {(n, 2, h, w)} or (2, H, W) = {(2, h, w)} "
                f"for labels {describe(labels)}, got {describe(offsets)}"
            )
    if isinstance(labels, torch.Tensor) and labels.device != offsets.device:
        raise ValueError(f"offsets: expected device {labels.device} (the labels' device), got {offsets.device}")
    return offsets


def _shift_numpy(
    labels: np.ndarray, offsets: np.ndarray, scale: int, iterations: int, *, use_numba: bool | None = None
) -> np.ndarray:
    """numpy implementation; ``use_numba=None`` picks the compiled kernel when numba is installed."""
    if use_numba is None:
        use_numba = kernels.HAVE_NUMBA
    if labels.ndim == 2:
        return _shift_numpy_map(labels, offsets, scale, iterations, use_numba)
    out = np.empty(labels.shape, dtype=labels.dtype)
    for i in range(labels.shape[0]):
        field = offsets if offsets.ndim == 3 else offsets[i]
        out[i] = _shift_numpy_map(labels[i], field, scale, iterations, use_numba)
    return out


def _shift_numpy_map(labels: np.ndarray, field: np.ndarray, scale: int, iterations: int, use_numba: bool):
    labels = np.ascontiguousarray(labels)
    dy, dx = np.ascontiguousarray(field[0]), np.ascontiguousarray(field[1])
    if use_numba:
        return kernels.shift_single(labels, dy, dx, scale, iterations)
    out = labels.copy()
    _shift_numpy_sparse(out, labels, dy, dx, scale, iterations)
    return out


def _moving_pixels(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Flat indices (int64, ascending) of pixels with a non-zero offset."""
    moving = dy != 0
    moving |= dx != 0
    return np.flatnonzero(moving)


def _shift_numpy_sparse(
    out: np.ndarray, labels: np.ndarray, dy: np.ndarray, dx: np.ndarray, scale: int, iterations: int
) -> None:
    """Gather into ``out`` (a C-contiguous copy of ``labels``), visiting only pixels with a non-zero offset."""
    height, width = labels.shape
    dy, dx = dy.ravel(), dx.ravel()
    moving = _moving_pixels(dy, dx)
    if moving.size == 0:
        return
    y, x = np.divmod(moving, width)
    position = moving
    for _ in range(iterations):
        y += scale * dy[position].astype(np.int64)
        x += scale * dx[position].astype(np.int64)
        np.clip(y, 0, height - 1, out=y)
        np.clip(x, 0, width - 1, out=x)
        position = y * width + x
    out.ravel()[moving] = labels.ravel()[position]


def _shift_torch(labels: torch.Tensor, offsets: torch.Tensor, scale: int, iterations: int) -> torch.Tensor:
    height, width = labels.shape[-2:]
    batched = labels.ndim == 3
    flat_labels = labels.reshape(-1, height * width) if batched else labels.reshape(1, -1)
    field = offsets if offsets.ndim == 4 else offsets.unsqueeze(0)
    field = field.expand(flat_labels.shape[0], 2, height, width).reshape(-1, 2, height * width).long()
    device = labels.device
    y = torch.arange(height, device=device).repeat_interleave(width).expand_as(flat_labels)
    x = torch.arange(width, device=device).repeat(height).expand_as(flat_labels)
    step_y, step_x = field[:, 0], field[:, 1]
    for _ in range(iterations):
        y = (y + scale * step_y).clamp_(0, height - 1)
        x = (x + scale * step_x).clamp_(0, width - 1)
        position = y * width + x
        step_y, step_x = field[:, 0].gather(1, position), field[:, 1].gather(1, position)
    return flat_labels.gather(1, position).reshape(labels.shape)
