"""Metrics against hand-computed values and against straightforward independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import disk

from helpers import read_label
from segfix.metrics import BoundaryStatistics, SegmentationMetrics


def seg2bmap_reference(seg):
    """DAVIS seg2bmap, written as in the original (zero-filled neighbours, then the last row/column fixed)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def reference_scores(preds, gts, num_classes, ignore, tolerances, ratio):
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    bcounts = np.zeros((num_classes, len(tolerances), 4))
    biou = np.zeros((num_classes, 2))
    for p, g in zip(preds, gts):
        valid = g != ignore
        d = max(1, int(round(ratio * np.hypot(*g.shape))))
        for c in range(num_classes):
            pc, gc = (p == c) & valid, (g == c) & valid
            inter[c] += (pc & gc).sum()
            union[c] += (pc | gc).sum()
            pb, gb = seg2bmap_reference(pc), seg2bmap_reference(gc)
            for i, t in enumerate(tolerances):
                bcounts[c, i] += [
                    (pb & ndimage.binary_dilation(gb, structure=disk(t))).sum(),
                    pb.sum(),
                    (gb & ndimage.binary_dilation(pb, structure=disk(t))).sum(),
                    gb.sum(),
                ]
            bands = []
            for m in (p == c, g == c):
                padded = np.pad(m, 1)
                eroded = ndimage.binary_erosion(padded, np.ones((3, 3)), iterations=d)[1:-1, 1:-1]
                bands.append(m & ~eroded & valid)
            biou[c] += [(bands[0] & bands[1]).sum(), (bands[0] | bands[1]).sum()]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        f = {}
        for i, t in enumerate(tolerances):
            mp, npred, mg, ngt = bcounts[:, i].T
            prec = np.where(npred > 0, mp / np.maximum(npred, 1), 0.0)
            rec = np.where(ngt > 0, mg / np.maximum(ngt, 1), 0.0)
            fs = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
            f[t] = np.where(npred + ngt > 0, fs, np.nan)
        b = np.where(biou[:, 1] > 0, biou[:, 0] / np.maximum(biou[:, 1], 1), np.nan)
    return iou, f, b


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
