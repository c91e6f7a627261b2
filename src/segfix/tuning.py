"""Choosing a model's decision and inference settings on held-out labelled images.

:func:`select_settings` refines coarse predictions of held-out images with every candidate setting and
:func:`choose_row` takes the cheapest of those close to the best gain. The coarse predictions are best a real
segmentation network's (``coarse``: the model to be refined, or any network that never saw those images):
how much to move depends on how a network errs. Without them, :func:`coarse_proxy` stands in for one. Settings
are built as values (``model.with_settings``, :class:`segfix.settings.DecisionSettings`): the model given is
never changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .field import apply_field, decide
from .metrics import SegmentationMetrics
from .model import SegFix

__all__ = ["COST_MARGIN", "TUNED_KEYS", "choose_row", "coarse_proxy", "select_settings"]

COST_MARGIN = 0.05
"""mIoU points a cheaper setting may trail the best one by and still be chosen by :func:`select_settings`."""

TUNED_KEYS = (
    "boundary_threshold",
    "direction_threshold",
    "semantic_scale",
    "iterations",
    "direction_vote",
    "flip_tta",
    "min_short_side",
)
"""The settings :func:`select_settings` chooses (flat names, see :data:`segfix.settings.FLAT_NAMES`)."""


def coarse_proxy(label: np.ndarray, num_classes: int, ignore_index: int, stride: int = 8) -> np.ndarray:
    """A stand-in for a segmentation network's output: ``label`` seen through a stride-``stride`` model
    (majority vote per block, bilinear upsampling of the one-hot votes, argmax)."""
    h, w = label.shape
    lab = torch.from_numpy(np.where(label == ignore_index, num_classes, label).astype(np.int64))
    one_hot = F.one_hot(lab, num_classes + 1).permute(2, 0, 1)[None].float()
    votes = F.avg_pool2d(one_hot, stride, ceil_mode=True)[:, :num_classes]
    up = F.interpolate(votes, size=(h, w), mode="bilinear", align_corners=False)
    return up[0].argmax(0).numpy().astype(label.dtype)


def _metrics(dataset) -> SegmentationMetrics:
    return SegmentationMetrics(
        dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,), boundary_iou_dilation=None
    )


@torch.inference_mode()
def select_settings(
    model: SegFix,
    dataset,
    *,
    scales: Sequence[int] = (1, 2),
    iterations: Sequence[int] = (1, 2),
    thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    direction_thresholds: Sequence[float] = (0.0, 0.5),
    votes: Sequence[bool] = (False, True),
    flips: Sequence[bool] = (False, True),
    min_short_sides: Sequence[int] = (0,),
    stride: int = 8,
    coarse: Sequence[np.ndarray] | None = None,
) -> tuple[dict, list[dict]]:
    """Choose :data:`TUNED_KEYS` on held-out data by the mIoU gain of refining coarse predictions (ties:
    boundary F-score at 1 px).

    Args:
        coarse: one coarse label map per sample of ``dataset``, in its class ids with its ignore label (a real
            network's predictions); None: :func:`coarse_proxy` of each label with ``stride``.

    Returns:
        (the chosen settings by flat name, one row per candidate with its ``miou_gain`` and ``f1px_gain``).
        Of the candidates within :data:`COST_MARGIN` of the best gain the cheapest is chosen (:func:`choose_row`).
    """
    samples = [dataset[i] for i in range(len(dataset))]
    # A size that no held-out image is below changes nothing: measuring it again would only repeat size 0.
    input_scale = model.settings.preprocessing.input_scale
    min_short_sides = [
        m for m in min_short_sides if m == 0 or any(min(s.image.shape[:2]) * input_scale < m for s in samples)
    ] or [0]
    if coarse is None:
        coarse = [coarse_proxy(s.label, dataset.num_classes, dataset.ignore_index, stride) for s in samples]
    elif len(coarse) != len(samples):
        raise ValueError(f"coarse: expected one map per held-out image ({len(samples)}), got {len(coarse)}")
    for sample, proxy in zip(samples, coarse):
        if proxy.shape != sample.label.shape:
            raise ValueError(
                f"coarse map of {sample.name}: expected the label's size {sample.label.shape}, got {proxy.shape}"
            )
    base = _metrics(dataset)
    for sample, proxy in zip(samples, coarse):
        base.update(proxy, sample.label)
    before = base.compute()
    outputs: dict[tuple[Any, Any], list] = {}
    for flip, short_side in itertools.product(flips, min_short_sides):
        variant = model.with_settings(flip_tta=flip, min_short_side=short_side)
        outputs[flip, short_side] = [variant.network_outputs(s.image) for s in samples]
    rows = []
    for combo in itertools.product(thresholds, direction_thresholds, scales, iterations, votes, flips, min_short_sides):
        candidate = dict(zip(TUNED_KEYS, combo))
        decision = model.settings.replace(**candidate).decision
        after = _metrics(dataset)
        for sample, proxy, out in zip(samples, coarse, outputs[candidate["flip_tta"], candidate["min_short_side"]]):
            field = decide(out, decision)
            after.update(apply_field(field, proxy, ignore_index=dataset.ignore_index), sample.label)
        a = after.compute()
        rows.append(
            {
                **candidate,
                "miou_gain": (a.miou - before.miou) * 100,
                "f1px_gain": (a.mean_boundary_f[1] - before.mean_boundary_f[1]) * 100,
            }
        )
    chosen = choose_row(rows, samples, input_scale)
    return {k: chosen[k] for k in TUNED_KEYS}, rows


def choose_row(rows: Sequence[dict], samples: Sequence, input_scale: float = 1.0, margin: float = COST_MARGIN) -> dict:
    """The cheapest of the rows whose mIoU gain is within ``margin`` points of the best (then the larger gain,
    then boundary F-score). Cost counts network passes: flip averaging doubles it, upscaling by ``f`` costs
    ``f**2``, so a flip or a larger size is kept only where it pays on the held-out images."""
    best_gain = max(r["miou_gain"] for r in rows)
    shorts = [min(s.image.shape[:2]) for s in samples]

    def cost(row: dict) -> float:
        factors = [
            max(input_scale, row["min_short_side"] / short) if row["min_short_side"] else input_scale
            for short in shorts
        ]
        return (2 if row["flip_tta"] else 1) * sum(min(f, 4.0) ** 2 for f in factors)

    close = [r for r in rows if r["miou_gain"] >= best_gain - margin]
    return min(close, key=lambda r: (round(cost(r), 6), -r["miou_gain"], -r["f1px_gain"]))
