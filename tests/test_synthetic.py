"""The synthetic inputs tests and benchmarks build on."""

from __future__ import annotations

import numpy as np


def test_roi_head_masks_coarsen_shapes_inside_their_boxes_only():
    """The benchmark's Mask R-CNN-like masks: a box-filling mask stays whole, a thin diagonal is smoothed (its
    one-pixel steps go), nothing leaves the box, and masks keep their order and count."""
    from segfix.synthetic import roi_head_masks

    masks = np.zeros((3, 120, 160), bool)
    masks[0, 10:50, 20:100] = True  # a rectangle: its own box
    for k in range(100):  # a staircase, 3 px thick
        masks[1, 10 + k, 40 + k : 43 + k] = True
    coarse = roi_head_masks(masks)  # the third mask is empty
    assert coarse.shape == masks.shape and coarse.dtype == bool
    np.testing.assert_array_equal(coarse[0], masks[0])
    rows, cols = np.flatnonzero(masks[1].any(1)), np.flatnonzero(masks[1].any(0))
    outside = np.ones((120, 160), bool)
    outside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = False
    assert not coarse[1][outside].any() and not coarse[2].any()
    assert 0 < (coarse[1] != masks[1]).sum() < masks[1].sum()  # 100 x 100 into 28 x 28: changed, not erased
