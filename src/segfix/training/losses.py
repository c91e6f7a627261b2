"""The SegFix training loss (original ``SegFixLoss``), as a function and a thin module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.thin import unchecked_thin_parts

__all__ = ["SegFixLoss", "segfix_loss"]


def _balanced_weights(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-batch inverse-frequency weights ``w_c = 1 - n_c / N`` over the supervised (>= 0) pixels."""
    valid = target[target >= 0]
    counts = torch.bincount(valid, minlength=num_classes).float()
    total = counts.sum().clamp_min(1.0)
    return 1.0 - counts / total


def segment_class_weights(segment_label: torch.Tensor, supervised: torch.Tensor, power: float) -> torch.Tensor:
    """Per-pixel weights ``share_c ** -power`` from each pixel's semantic class ``c``, where ``share_c`` is the
    class's share of the ``supervised`` pixels in the batch; normalised to mean 1 over those pixels.

    Thin classes (poles, signs) own few boundary pixels, so the plain loss is dominated by the long edges of
    large segments; ``power`` 0.5 gives a class with 1/100 of the pixels 10x the weight of an even share.

    Args:
        segment_label: int64 ``(N, H, W)`` semantic class per pixel, -1 = none.
        supervised: bool ``(N, H, W)``, the pixels the weighted loss term covers.
        power: 0 gives all ones.

    Returns:
        float32 ``(N, H, W)``, 0 outside ``supervised``.
    """
    mask = supervised & (segment_label >= 0)
    weights = torch.zeros(segment_label.shape, dtype=torch.float32, device=segment_label.device)
    if not bool(mask.any()):
        return weights
    classes = segment_label[mask]
    counts = torch.bincount(classes).float()
    share = counts / counts.sum()
    per_class = torch.where(counts > 0, share.clamp_min(1e-12) ** -power, torch.zeros_like(share))
    values = per_class[classes]
    weights[mask] = values / values.mean()
    return weights


def thin_part_weights(
    segment_label: torch.Tensor, supervised: torch.Tensor, radius: int, weight: float
) -> torch.Tensor:
    """Per-pixel weights: ``weight`` at the ``supervised`` pixels that lie in thin parts of their ground-truth
    segment (:func:`segfix.thin_parts` of radius ``radius`` of ``segment_label``: a pole's pixels, a narrow gap),
    1 at the others; normalised to mean 1 over ``supervised``.

    Directions inside segments a few pixels wide are the ones the network gets most wrong (pole: 34 % right on
    CamVid val, against 54 % overall), and such pixels are a small share of any batch's boundary band.

    Args:
        segment_label: int64 ``(N, H, W)`` semantic class per pixel, -1 = none.
        supervised: bool ``(N, H, W)``, the pixels the weighted loss term covers.
        radius: the opening's radius (2: parts under 5 px wide).
        weight: the weight of a thin part's pixel against 1 elsewhere.

    Returns:
        float32 ``(N, H, W)``, 0 outside ``supervised``.
    """
    thin = unchecked_thin_parts(segment_label, int(radius), ignore_index=-1)
    weights = torch.where(thin, float(weight), 1.0) * supervised
    total = weights.sum()
    return weights * (supervised.sum() / total) if float(total) > 0 else weights


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
    direction_pixel_weight: torch.Tensor | None = None,
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
        direction_pixel_weight: optional float ``(N, H, W)`` weights multiplying each pixel's direction term
            (e.g. :func:`segment_class_weights`); the term stays a weighted mean.

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
        if direction_pixel_weight is None:
            direction_loss = F.cross_entropy(direction_logits, direction_target, weight=dir_weights, ignore_index=-1)
        else:
            direction_loss = _pixel_weighted_ce(direction_logits, direction_target, dir_weights, direction_pixel_weight)
    else:  # no supervised pixel in this batch: a zero that keeps the graph connected
        direction_loss = direction_logits.sum() * 0.0
    total = boundary_weight * boundary_loss + direction_weight * direction_loss
    return total, {"boundary": float(boundary_loss.detach()), "direction": float(direction_loss.detach())}


def _pixel_weighted_ce(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor, pixel_weights: torch.Tensor
) -> torch.Tensor:
    """``sum(w_class * w_pixel * ce) / sum(w_class * w_pixel)`` over pixels with ``target >= 0``: the same
    weighted mean as ``F.cross_entropy(weight=...)``, with a second, per-pixel factor."""
    per_pixel = F.cross_entropy(logits, target, ignore_index=-1, reduction="none")
    valid = target >= 0
    weight = torch.where(valid, class_weights[target.clamp_min(0)] * pixel_weights.to(per_pixel.dtype), 0.0)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1e-12)


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
