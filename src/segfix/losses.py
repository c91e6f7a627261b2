"""The SegFix training loss (original ``SegFixLoss``), as a function and a thin module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SegFixLoss", "segfix_loss"]


def _balanced_weights(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-batch inverse-frequency weights ``w_c = 1 - n_c / N`` over the supervised (>= 0) pixels."""
    valid = target[target >= 0]
    counts = torch.bincount(valid, minlength=num_classes).float()
    total = counts.sum().clamp_min(1.0)
    return 1.0 - counts / total


def segfix_loss(
    boundary_logits: torch.Tensor,
    direction_logits: torch.Tensor,
    boundary_target: torch.Tensor,
    direction_target: torch.Tensor,
    *,
    boundary_weight: float = 1.0,
    direction_weight: float = 1.0,
    direction_on: str = "target",
    align_corners: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Class-balanced boundary cross-entropy plus direction cross-entropy on boundary pixels.

    Args:
        boundary_logits: ``(N, 2, h, w)``; upsampled bilinearly to the target size, as the original does.
        direction_logits: ``(N, D, h, w)``.
        boundary_target: int64 ``(N, H, W)`` in {0, 1}, -1 = ignore.
        direction_target: int64 ``(N, H, W)`` direction class, -1 where there is none (off-boundary, ignore).
        direction_on: ``'target'`` supervises directions on ground-truth boundary pixels; ``'predicted'`` on
            pixels the network currently calls boundary (the original), which also have a direction target.
        align_corners: upsampling convention.

    Returns:
        (total loss, {"boundary": ..., "direction": ...} as floats for logging).
    """
    size = boundary_target.shape[-2:]
    boundary_logits = F.interpolate(boundary_logits.float(), size=size, mode="bilinear", align_corners=align_corners)
    direction_logits = F.interpolate(direction_logits.float(), size=size, mode="bilinear", align_corners=align_corners)
    weights = _balanced_weights(boundary_target, 2)
    boundary_loss = F.cross_entropy(boundary_logits, boundary_target, weight=weights, ignore_index=-1)
    direction_target = direction_target.clone()
    if direction_on == "predicted":
        predicted = boundary_logits.detach().softmax(1)[:, 1] > 0.5
        direction_target[~predicted] = -1
    elif direction_on != "target":
        raise ValueError(f"direction_on: expected 'target' or 'predicted', got {direction_on!r}")
    if (direction_target >= 0).any():
        dir_weights = _balanced_weights(direction_target, direction_logits.shape[1])
        direction_loss = F.cross_entropy(direction_logits, direction_target, weight=dir_weights, ignore_index=-1)
    else:  # no supervised pixel in this batch: a zero that keeps the graph connected
        direction_loss = direction_logits.sum() * 0.0
    total = boundary_weight * boundary_loss + direction_weight * direction_loss
    return total, {"boundary": float(boundary_loss.detach()), "direction": float(direction_loss.detach())}


class SegFixLoss(nn.Module):
    """Module form of :func:`segfix_loss`."""

    def __init__(
        self,
        boundary_weight: float = 1.0,
        direction_weight: float = 1.0,
        direction_on: str = "target",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.kwargs = dict(
            boundary_weight=boundary_weight,
            direction_weight=direction_weight,
            direction_on=direction_on,
            align_corners=align_corners,
        )

    def forward(self, boundary_logits, direction_logits, boundary_target, direction_target):
        return segfix_loss(boundary_logits, direction_logits, boundary_target, direction_target, **self.kwargs)
