"""Metrics against hand-computed values and against straightforward independent implementations."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import read_label, reference_scores
from segfix.metrics import BoundaryStatistics, SegmentationMetrics


def test_absent_classes_do_not_count():
    gt = np.zeros((6, 6), np.int64)
    gt[:, 3:] = 1
    m = SegmentationMetrics(5)
    m.update(gt, gt)
    r = m.compute()
    np.testing.assert_array_equal(r.iou[:2], [1.0, 1.0])
    assert np.isnan(r.iou[2:]).all() and r.miou == 1.0
    assert r.mean_boundary_f[1] == 1.0 and np.isnan(r.boundary_f[1][2:]).all()
    assert r.mean_boundary_iou == 1.0


def test_boundary_statistics():
    gt = np.zeros((20, 20), np.uint8)
    gt[:, 10:] = 1
    gt[:, :2] = 255
    stats = BoundaryStatistics(3, widths=(1, 2, 5))
    stats.update(gt)
    share = stats.compute()
    # Class 0 spans columns 2..9: distances to class 1 / ignore are min(col - 1, 10 - col).
    d0 = np.minimum(np.arange(2, 10) - 1, 10 - np.arange(2, 10))
    d1 = np.arange(10, 20) - 9
    np.testing.assert_allclose(share[0], [(d0 <= w).mean() for w in (1, 2, 5)])
    np.testing.assert_allclose(share[1], [(d1 <= w).mean() for w in (1, 2, 5)])
    assert np.isnan(share[2]).all()


def test_tables_and_dict():
    gt = np.zeros((8, 8), np.int64)
    gt[4:] = 1
    m = SegmentationMetrics(2, class_names=["road", "car"])
    m.update(gt, gt)
    r = m.compute()
    table = r.to_markdown()
    assert "| road |" in table and "| **mean** |" in table and "F@2px" in table
    d = r.as_dict()
    assert d["mean"]["IoU"] == 100.0 and d["per_class"]["car"]["F@1px"] == 100.0


@pytest.mark.data
def test_camvid_espnet_matches_reference(camvid):
    names = sorted(p.name for p in (camvid / "valannot").glob("*.png"))[:2]
    gts = [read_label(camvid / "valannot" / n) for n in names]
    preds = [read_label(camvid / "val_espnet" / n) for n in names]
    m = SegmentationMetrics(11, ignore_index=11)
    for p, g in zip(preds, gts):
        m.update(p, g)
    r = m.compute()
    iou, f, biou = reference_scores(preds, gts, 11, 11, (1, 2, 3), 0.02)
    np.testing.assert_allclose(r.iou, iou)
    np.testing.assert_allclose(r.boundary_f[1], f[1])
    np.testing.assert_allclose(r.boundary_iou, biou)


def test_boundary_iou_can_be_skipped_without_changing_the_other_scores():
    rng = np.random.default_rng(5)
    target = rng.integers(0, 3, (2, 20, 30))
    pred = np.where(rng.random(target.shape) < 0.2, rng.integers(0, 3, target.shape), target)
    full, light = SegmentationMetrics(3), SegmentationMetrics(3, boundary_iou_dilation=None)
    full.update(pred, target)
    light.update(pred, target)
    a, b = full.compute(), light.compute()
    np.testing.assert_array_equal(a.iou, b.iou)
    for t in (1, 2, 3):
        np.testing.assert_array_equal(a.boundary_f[t], b.boundary_f[t])
    assert np.isnan(b.boundary_iou).all() and not np.isnan(a.boundary_iou).any()
