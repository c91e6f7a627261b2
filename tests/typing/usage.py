"""Typed use of the public API: checked by mypy in tests/test_typing.py (never imported by pytest).

Each ``assert_type`` states the type a user's checker infers; a wrong overload fails the suite.
"""

from __future__ import annotations

import numpy as np
import torch
from typing_extensions import assert_type

import segfix
from segfix.metrics import MetricsResult, SegmentationMetrics


def refine_arrays(model: segfix.SegFix, image: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    refined = model.refine(image, coarse)
    assert_type(refined, np.ndarray)
    return refined


def refine_tensors(model: segfix.SegFix, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    assert_type(model.refine(image, coarse, scale=2), torch.Tensor)
    assert_type(model.refine([image, image], [coarse, coarse]), list[torch.Tensor])
    assert_type(model.refine([image], [coarse.numpy()]), list[np.ndarray])
    return model.refine(image, coarse)


def functional(labels: np.ndarray, offsets: np.ndarray, prob: np.ndarray, moving: np.ndarray) -> None:
    assert_type(segfix.shift_labels(labels, offsets, scale=2), np.ndarray)
    assert_type(segfix.shift_labels(torch.from_numpy(labels), torch.from_numpy(offsets)), torch.Tensor)
    assert_type(segfix.refine_semantic(labels, offsets), np.ndarray)
    assert_type(segfix.vote_labels(labels, prob, moving, scale=1), np.ndarray)
    assert_type(segfix.vote_labels(torch.from_numpy(labels), prob, moving), torch.Tensor)
    assert_type(segfix.refine_instances(labels.astype(bool), offsets), np.ndarray)


def metrics(pred: np.ndarray, target: np.ndarray) -> float:
    m = SegmentationMetrics(11, ignore_index=255)
    m.update(pred, target)
    result = m.compute()
    assert_type(result, MetricsResult)
    return result.miou + result.mean_boundary_f[1]


def loading() -> segfix.SegFix:
    model = segfix.SegFix.from_pretrained("camvid-lite0-v5", map_location="cpu", local_files_only=True)
    assert_type(segfix.list_models(), list[str])
    return model
