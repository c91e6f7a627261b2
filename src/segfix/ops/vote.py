"""Refinement by a direction vote: each boundary pixel takes the label most of its direction probability points at.

SegFix moves a boundary pixel along its single most likely direction. Where the direction head is unsure (two
neighbouring directions with similar probability, or a flat distribution on thin structures), that argmax is
often wrong. The vote keeps the gather but marginalises over the direction:

    score_p(c) = sum_d P(d | p) * [label[clamp(p + scale * v_d)] == c]
    out[p]     = argmax_c score_p(c)   for the moving pixels p,

so two directions that reach the same segment pool their probability, and a pixel whose directions disagree
about the label keeps the one with the most support. Like :func:`segfix.shift_labels` it is a pure gather of
labels already in the map (nothing is interpolated or invented); the ignore label gets no votes and is never
copied, and an ignore pixel never changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..checks import (
    LabelArray,
    as_tensor,
    check_array,
    check_iterations,
    check_label_map,
    check_scale,
    computable,
    describe,
)
from . import kernels
from .directions import direction_vectors

__all__ = ["VOTE_BACKENDS", "vote_labels"]

VOTE_BACKENDS = ("auto", "numba", "torch")
"""``vote_labels(backend=...)``: ``'auto'`` is the compiled kernel on the CPU (where numba is installed; torch
until the kernel has been set up in the background, which the first call starts) and torch elsewhere; both give
the same labels."""

_COMPILED_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def vote_labels(
    label_map: LabelArray,
    direction_prob: np.ndarray | torch.Tensor,
    moving: np.ndarray | torch.Tensor,
    *,
    scale: int = 1,
    min_vote_share: float = 0.0,
    ignore_index: int | None = 255,
    iterations: int = 1,
    backend: str = "auto",
) -> LabelArray:
    """Refine a semantic label map by a direction vote at the ``moving`` pixels.

    Args:
        label_map: integer class ids ``(H, W)`` or ``(N, H, W)``, numpy or torch.
        direction_prob: direction probabilities (softmax of the direction logits; D = 4, 8 or 16 in the order of
            :func:`segfix.direction_vectors`): ``(D, H, W)`` / ``(N, D, H, W)`` at every pixel, or ``(K, D)`` for
            the K moving pixels alone, in row-major order (the order of ``moving.nonzero()``).
        moving: boolean ``(H, W)`` / ``(N, H, W)``: the pixels that may change (the predicted boundary).
        scale: distance of the candidate pixels, in steps of the direction vectors.
        min_vote_share: a pixel changes only when the winning label's probability exceeds this (0: always).
        ignore_index: label that gets no votes and is never changed; ``None`` if every value is a class.
        iterations: votes in a row, each on the labels the last one left (a label travels up to
            ``iterations * scale`` pixels).
        backend: ``'auto'`` (a compiled numba kernel, parallel over the moving pixels, for numpy arrays and CPU
            tensors; torch on other devices), ``'numba'`` or ``'torch'``: the same labels either way.

    Returns:
        The refined label map: same type, dtype, shape (and device) as ``label_map``.

    Example:
        >>> import numpy as np, segfix
        >>> labels = np.array([[0, 0, 1, 1]])
        >>> prob = np.zeros((8, 1, 4)); prob[0] = 0.4; prob[1] = 0.3; prob[4] = 0.3  # left, up-left, right
        >>> segfix.vote_labels(labels, prob, np.array([[False, False, True, False]]), scale=1)
        array([[0, 0, 0, 1]])
    """
    labels, prob, mask, ignore_index, scale = _checked_vote_inputs(
        label_map, direction_prob, moving, scale, min_vote_share, ignore_index
    )
    check_iterations(iterations)
    return _vote_back(label_map, labels, prob, mask, scale, min_vote_share, ignore_index, iterations, backend)


def unchecked_vote_labels(
    label_map: LabelArray,
    direction_prob: Any,
    moving: Any,
    *,
    scale: int,
    min_vote_share: float,
    ignore_index: int | None,
    iterations: int,
) -> LabelArray:
    """:func:`vote_labels` on inputs its caller has checked once (:func:`segfix.ops.field.apply_field`): a valid
    label map and its effective ignore label, the moving pixels' probabilities ``(K, D)`` in row-major order,
    a bool mask of the map's shape, an int ``scale``, ``min_vote_share`` in [0, 1), ``iterations`` in bounds."""
    labels = computable(as_tensor(label_map), "label_map")
    mask = as_tensor(moving, labels.device)
    prob = as_tensor(direction_prob, labels.device)
    if label_map.ndim == 2:
        labels, mask = labels[None], mask[None]
    return _vote_back(label_map, labels, prob, mask, scale, min_vote_share, ignore_index, iterations, "auto")


def _vote_back(label_map, labels, prob, mask, scale, min_vote_share, ignore_index, iterations, backend) -> Any:
    """The vote on batched tensors, given back in ``label_map``'s type, dtype and shape."""
    compiled = _compiled(backend, labels)
    out = _vote(
        labels,
        prob,
        mask,
        scale=scale,
        min_vote_share=min_vote_share,
        ignore_index=ignore_index,
        iterations=iterations,
        compiled=compiled,
    )
    if label_map.ndim == 2:
        out = out[0]
    if isinstance(label_map, np.ndarray):
        return out.numpy().astype(label_map.dtype, copy=False)
    return out.to(label_map.dtype)


def _compiled(backend: str, labels: torch.Tensor) -> bool:
    """Whether the numba kernel votes on ``labels`` under ``backend``."""
    if backend not in VOTE_BACKENDS:
        raise ValueError(f"backend: expected one of {VOTE_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    usable = labels.device.type == "cpu" and labels.dtype in _COMPILED_DTYPES
    if backend == "numba":
        if not kernels.HAVE_NUMBA:
            raise ImportError("backend 'numba': numba is not installed (pip install numba)")
        if not usable:
            raise ValueError(
                f"backend 'numba': expected CPU labels of an integer dtype in {_COMPILED_DTYPES}, got "
                f"{labels.dtype} on {labels.device}"
            )
        return True
    # The compiled kernel's first use in a process sets numba up (about 0.5 s); until a background thread has
    # done that, the torch vote (the same labels, a few times slower) serves, so a first refine is not delayed.
    return usable and kernels.HAVE_NUMBA and kernels.vote_kernel_ready()


def _checked_vote_inputs(label_map, direction_prob, moving, scale, min_vote_share, ignore_index):
    """Validate :func:`vote_labels`' arguments -> batched tensors (labels, the moving pixels' probabilities
    ``(K, D)``, mask) on the labels' device, the effective ignore label and the scale."""
    ignore_index = check_label_map(label_map, ignore_index)
    scale = check_scale(scale)
    if isinstance(min_vote_share, bool) or not isinstance(min_vote_share, (int, float, np.integer, np.floating)):
        raise TypeError(f"min_vote_share: expected a number in [0, 1), got {min_vote_share!r}")
    if not 0 <= min_vote_share < 1:
        raise ValueError(f"min_vote_share: expected a number in [0, 1), got {min_vote_share!r}")
    check_array(direction_prob, "direction_prob")
    check_array(moving, "moving")
    batched = label_map.ndim == 3
    labels = computable(as_tensor(label_map), "label_map")
    prob = as_tensor(direction_prob, labels.device)
    mask = as_tensor(moving, labels.device)
    if not prob.dtype.is_floating_point:
        raise TypeError(f"direction_prob: expected a float dtype (probabilities), got {describe(direction_prob)}")
    if not batched:
        labels, mask = labels[None], mask[None]
    n, h, w = labels.shape
    if tuple(mask.shape) != (n, h, w) or mask.dtype != torch.bool:
        raise ValueError(f"moving: expected a boolean mask of shape {tuple(label_map.shape)}, got {describe(moving)}")
    if prob.ndim == 2:  # the moving pixels' rows already
        if prob.shape[0] != int(mask.sum()):
            raise ValueError(
                f"direction_prob: expected (K, D) rows for the K={int(mask.sum())} moving pixels, got "
                f"{describe(direction_prob)}"
            )
        return labels, prob, mask, ignore_index, scale
    prob = prob if batched else prob[None]
    if prob.ndim != 4 or prob.shape[0] != n or tuple(prob.shape[2:]) != (h, w):
        raise ValueError(
            f"direction_prob: expected shape ({'N, ' if batched else ''}D, {h}, {w}) to match label_map "
            f"{tuple(label_map.shape)}, or (K, D) for the moving pixels, got {describe(direction_prob)}"
        )
    b, y, x = mask.nonzero(as_tuple=True)
    prob = prob[b, :, y, x]
    return labels, prob, mask, ignore_index, scale


def _vote(
    labels: torch.Tensor,
    prob: torch.Tensor,
    mask: torch.Tensor,
    *,
    scale: int,
    min_vote_share: float,
    ignore_index: int | None,
    iterations: int = 1,
    compiled: bool = False,
) -> torch.Tensor:
    """The vote on checked, batched tensors: labels ``(N, H, W)``, the moving pixels' probabilities ``(K, D)``
    in row-major order, mask ``(N, H, W)``; ``iterations`` votes, the pixels and weights found once."""
    n, h, w = labels.shape
    # A step longer than the image lands on its border, however long: bounding it keeps the sums exact.
    step = min(scale, max(h, w))
    vectors = torch.as_tensor(direction_vectors(prob.shape[1]), dtype=torch.int64, device=labels.device) * step
    b, y, x = mask.nonzero(as_tuple=True)
    weights = prob.float()  # (K, D)
    # The float64 sum is finite exactly when every weight is (no float32 overflows it); the rows are looked at
    # only when it is not. An ignore pixel never votes, so its row may hold anything.
    if not bool(torch.isfinite(weights.sum(dtype=torch.float64))):
        voting = labels[b, y, x] != ignore_index if ignore_index is not None else torch.ones_like(b, dtype=torch.bool)
        if not bool(torch.isfinite(weights[voting]).all()):
            raise ValueError("direction_prob: expected finite probabilities at the moving pixels, found NaN or inf")
        weights = weights.nan_to_num()
    if compiled:  # the kernel skips ignore pixels itself
        flat = labels.contiguous().view(-1).numpy()
        pixels = (b.numpy(), y.numpy(), x.numpy())
        steps = vectors.contiguous().numpy()
        weights_np = weights.contiguous().numpy()
        out_np = kernels.vote_flat(flat, (h, w), pixels, steps, weights_np, min_vote_share, ignore_index, iterations)
        return torch.from_numpy(out_np).view(n, h, w)
    if ignore_index is not None:  # an ignore pixel never changes, in any iteration
        keep = labels[b, y, x] != ignore_index
        b, y, x, weights = b[keep], y[keep], x[keep], weights[keep]
    ty = (y[:, None] + vectors[None, :, 0]).clamp_(0, h - 1)
    tx = (x[:, None] + vectors[None, :, 1]).clamp_(0, w - 1)
    out = labels
    for _ in range(iterations):
        out = _vote_once(out, b, y, x, ty, tx, weights, min_vote_share, ignore_index)
    return out


def _vote_once(labels, b, y, x, ty, tx, weights, min_vote_share: float, ignore_index: int | None) -> torch.Tensor:
    """One vote: each pixel ``(b, y, x)`` takes the label its candidates ``(b, ty, tx)`` pool most weight on."""
    out = labels.clone()
    candidates = labels[b[:, None], ty, tx]  # (K, D)
    if ignore_index is not None:
        weights = weights.masked_fill(candidates == ignore_index, 0.0)
    # Each candidate's score is the total probability of the directions that reach the same label; one
    # direction at a time, so that no (K, D, D) volume is made (a gigabyte at 4096x8192).
    score = torch.empty_like(weights)
    for d in range(candidates.shape[1]):
        score[:, d] = (weights * (candidates == candidates[:, d : d + 1])).sum(1)
    if score.numel():
        share, best = score.max(1)
        winner = candidates.gather(1, best[:, None])[:, 0]
        change = share > min_vote_share
        out[b[change], y[change], x[change]] = winner[change]
    return out
