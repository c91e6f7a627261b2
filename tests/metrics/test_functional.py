"""Metrics against hand-computed values and against straightforward independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import reference_scores, seg2bmap_reference, voronoi_labels
from segfix.metrics import SegmentationMetrics, confusion_matrix, mask_boundary
from segfix.metrics.functional import class_iou


def test_hand_computed_tiny_map():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 3], [2, 0, 1, 1]])
    m = SegmentationMetrics(4, tolerances=(1,))
    m.update(pred, gt)
    r = m.compute()
    # class 0: TP 3, FN 1 (pixel (0,1)), FP 1 (pixel (2,1)) -> 3/5; class 1: TP 3, FN 1 (pixel (1,3)),
    # FP 1 (pixel (0,1)); its predictions on ignore pixels don't count -> 3/5; class 2: TP 1, FN 1 -> 1/2;
    # class 3: predicted once on a class-1 pixel -> 0/1.
    np.testing.assert_allclose(r.iou, [3 / 5, 3 / 5, 1 / 2, 0.0])
    assert r.miou == pytest.approx((3 / 5 + 3 / 5 + 1 / 2 + 0) / 4)
    assert r.pixel_accuracy == pytest.approx(7 / 10)
    cm = confusion_matrix(pred, gt, 4)
    assert cm.shape == (4, 5) and cm.sum() == 10 and cm[1, 3] == 1


def test_boundary_fscore_hand_computed():
    gt = np.zeros((10, 10), np.int64)
    gt[:, 5:] = 1
    pred = np.zeros_like(gt)
    pred[:, 7:] = 1  # edge 2 px to the right
    for tol, expected in ((1, 0.0), (2, 1.0), (3, 1.0)):
        m = SegmentationMetrics(2, tolerances=(tol,))
        m.update(pred, gt)
        f = m.compute().boundary_f[tol]
        np.testing.assert_allclose(f, [expected, expected])


def test_mask_boundary_matches_seg2bmap():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((17, 23)) < 0.5
        np.testing.assert_array_equal(mask_boundary(mask), seg2bmap_reference(mask))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_maps_match_reference(seed):
    rng = np.random.default_rng(seed)
    gts = [voronoi_labels((40, 56), 14, 6, seed=seed * 10 + i) for i in range(3)]
    preds = []
    for g in gts:
        p = g.copy()
        noise = rng.random(g.shape) < 0.05
        p[noise] = rng.integers(0, 6, noise.sum())
        p[:, 2:] = p[:, :-2]
        preds.append(p)
    gts[0][:5] = 255
    m = SegmentationMetrics(6, tolerances=(1, 2, 3), boundary_iou_dilation=0.05)
    for p, g in zip(preds, gts):
        m.update(torch.from_numpy(p), torch.from_numpy(g))  # torch input works too
    r = m.compute()
    iou, f, biou = reference_scores(preds, gts, 6, 255, (1, 2, 3), 0.05)
    np.testing.assert_allclose(r.iou, iou)
    for t in (1, 2, 3):
        np.testing.assert_allclose(r.boundary_f[t], f[t])
    np.testing.assert_allclose(r.boundary_iou, biou)
    # Batched update gives the same totals.
    m2 = SegmentationMetrics(6, tolerances=(1, 2, 3), boundary_iou_dilation=0.05)
    m2.update(np.stack(preds), np.stack(gts))
    np.testing.assert_array_equal(m2.compute().boundary_iou, r.boundary_iou)


def test_errors():
    with pytest.raises(ValueError, match="expected the target's shape"):
        SegmentationMetrics(3).update(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(TypeError, match="integer dtype"):
        SegmentationMetrics(3).update(np.zeros((4, 4)), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics(3, class_names=["a"])
    with pytest.raises(ValueError, match="tolerances"):
        SegmentationMetrics(3, tolerances=(0,))
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(0)


def test_class_iou_from_a_confusion_matrix():
    # rows: ground truth 0, 1, 2; columns: predictions 0, 1, 2 and "outside the classes"
    confusion = np.array([[3, 1, 0, 0], [0, 2, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_allclose(class_iou(confusion)[:2], [3 / 4, 2 / 4])
    assert np.isnan(class_iou(confusion)[2])
