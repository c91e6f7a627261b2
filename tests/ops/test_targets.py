"""boundary_targets / instance_targets against a plain per-class scipy reference and hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import segfix
from helpers import read_label, voronoi_labels
from segfix.ops.directions import angle_to_direction


def reference_targets(label, *, segments, ignore_index, max_distance=5, num_directions=8, border="zero"):
    """The original generator written out plainly: one EDT and one float64 correlation per segment."""
    ky, kx = segfix.gradient_kernels()
    mode = "constant" if border == "zero" else "nearest"
    depth = np.zeros(label.shape)
    gy = np.zeros(label.shape)
    gx = np.zeros(label.shape)
    for s in segments:
        mask = label == s
        d = ndimage.distance_transform_edt(mask)
        depth += d
        gy += np.where(mask, ndimage.correlate(d, ky, mode=mode, cval=0.0), 0.0)
        gx += np.where(mask, ndimage.correlate(d, kx, mode=mode, cval=0.0), 0.0)
    angle = np.degrees(np.arctan2(gy, gx))
    boundary = depth <= max_distance
    if ignore_index is not None:
        boundary &= label != ignore_index
    return depth, boundary, angle, np.hypot(gy, gx)


def semantic_segments(label, ignore_index=255, min_pixels=100):
    values, counts = np.unique(label, return_counts=True)
    return [v for v, n in zip(values, counts) if v != ignore_index and n >= min_pixels]


def bin_edges(num_directions):
    if num_directions == 4:
        return np.array([-180.0, -90.0, 0.0, 90.0, 180.0])
    step = 360.0 / num_directions
    return -180.0 + step / 2 + step * np.arange(num_directions)


def assert_matches_reference(targets, ref, num_directions):
    depth, boundary, angle, magnitude = ref
    np.testing.assert_array_equal(targets.depth, depth.astype(np.float32))
    np.testing.assert_array_equal(targets.boundary, boundary)
    near_edge = np.min(np.abs(angle[..., None] - bin_edges(num_directions)), axis=-1) < 1e-6
    defined = (magnitude > 1e-9) & ~near_edge
    assert defined.mean() > 0.5  # the comparison covers most of the image
    expected = angle_to_direction(angle, num_directions)
    np.testing.assert_array_equal(targets.direction[defined], expected[defined])
    wrapped = (targets.angle[defined] - angle[defined] + 180.0) % 360.0 - 180.0
    assert np.abs(wrapped).max() < 1e-3


@pytest.mark.parametrize("num_directions", [4, 8, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semantic_matches_reference(num_directions, seed):
    label = voronoi_labels((96, 128), 40, 12, seed)
    label[label == 11] = 255  # an ignore region
    label[5:8, 5:9] = 10  # a class under 100 px, skipped
    t = segfix.boundary_targets(label, num_directions=num_directions)
    ref = reference_targets(label, segments=semantic_segments(label), ignore_index=255, num_directions=num_directions)
    assert_matches_reference(t, ref, num_directions)
    assert t.depth.dtype == np.float32 and t.angle.dtype == np.float32
    assert t.direction.dtype == np.int64 and t.boundary.dtype == bool
    assert t.direction.min() >= 0 and t.direction.max() < num_directions


@pytest.mark.parametrize("max_distance", [1, 3, 5.5])
def test_replicate_border_and_band_width(max_distance):
    label = voronoi_labels((64, 80), 25, 5, seed=7)
    t = segfix.boundary_targets(label, border="replicate", max_distance=max_distance, min_pixels=0)
    ref = reference_targets(
        label, segments=np.unique(label), ignore_index=255, border="replicate", max_distance=max_distance
    )
    assert_matches_reference(t, ref, 8)


def test_left_right_split_signs():
    label = np.zeros((30, 20), np.uint8)
    label[:, 10:] = 1
    t = segfix.boundary_targets(label, min_pixels=0)
    rows = slice(3, 27)  # away from the zero-padding rows at the top and bottom
    # Left class's last column points left (0, -1); right class's first column points right (0, +1).
    assert (t.direction[rows, 9] == 0).all()
    assert (t.direction[rows, 10] == 4).all()
    offsets = t.offsets()
    assert (offsets[:, rows, 9] == np.array([[0], [-1]])).all()
    assert (offsets[:, rows, 10] == np.array([[0], [1]])).all()
    # Depth is the distance to the other class; the band is 5 px on each side.
    np.testing.assert_array_equal(t.depth[15, 5:15], [5, 4, 3, 2, 1, 1, 2, 3, 4, 5])
    assert t.boundary[15, 5:15].all() and not t.boundary[15, 4] and not t.boundary[15, 15]


def test_top_bottom_split_signs():
    label = np.zeros((20, 30), np.uint8)
    label[10:, :] = 3
    t = segfix.boundary_targets(label, min_pixels=0)
    cols = slice(3, 27)
    assert (t.direction[9, cols] == 2).all()  # upper class points up (-1, 0)
    assert (t.direction[10, cols] == 6).all()  # lower class points down (+1, 0)


def test_zero_padding_artefact_and_fix():
    label = np.zeros((20, 20), np.uint8)
    label[:, 10:] = 1
    faithful = segfix.boundary_targets(label, min_pixels=0)
    fixed = segfix.boundary_targets(label, min_pixels=0, border="replicate")
    # Bottom row, left class, last column: the true direction is "left" (0); zero padding bends it upwards.
    assert faithful.direction[19, 9] == 1  # (-1, -1)
    assert fixed.direction[19, 9] == 0


def test_zero_gradient_modes():
    label = np.zeros((21, 21), np.uint8)
    label[8:13, 8:13] = 1  # a 5x5 square: its centre has a zero gradient
    faithful = segfix.boundary_targets(label, min_pixels=0)
    assert faithful.angle[10, 10] == 0 and faithful.direction[10, 10] == 4  # atan2(0, 0) -> "right"
    fixed = segfix.boundary_targets(label, min_pixels=0, zero_gradient="no_direction")
    assert fixed.direction[10, 10] == -1
    assert (fixed.offsets()[:, 10, 10] == 0).all()
    np.testing.assert_array_equal(fixed.direction[fixed.direction >= 0], faithful.direction[fixed.direction >= 0])


def test_ignore_and_small_classes():
    label = np.zeros((40, 40), np.uint8)
    label[:, 20:] = 255
    label[2:5, 2:5] = 7  # 9 px: skipped with the default min_pixels=100
    t = segfix.boundary_targets(label)
    assert not t.boundary[:, 20:].any()  # never on ignore pixels
    assert (t.depth[:, 20:] == 0).all()
    assert (t.depth[2:5, 2:5] == 0).all() and t.boundary[2:5, 2:5].all()  # skipped class: depth 0 -> boundary
    # The ignore region counts as "another segment" for its neighbours.
    assert t.depth[20, 19] == 1 and t.boundary[20, 19]
    kept = segfix.boundary_targets(label, min_pixels=0)
    assert kept.depth[3, 3] == 2


def test_whole_image_one_class():
    t = segfix.boundary_targets(np.full((8, 9), 3, np.uint8), min_pixels=0)
    assert np.isinf(t.depth).all() and not t.boundary.any()


def test_instance_targets_every_id_is_a_segment():
    ids = voronoi_labels((64, 64), 30, 1000, seed=3, dtype=np.int32) + 24000  # car-like ids, mostly distinct
    ids[:10] = 255  # void
    ids[30:32, 30:32] = 26001  # a 4 px instance: kept
    t = segfix.instance_targets(ids, ignore_index=255)
    ref = reference_targets(ids, segments=np.unique(ids), ignore_index=255)
    assert_matches_reference(t, ref, 8)
    assert t.depth[31, 31] == 1 and t.boundary[30:32, 30:32].all()


def test_errors():
    good = np.zeros((8, 8), np.uint8)
    with pytest.raises(TypeError, match="integer dtype"):
        segfix.boundary_targets(good.astype(np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(H, W\)"):
        segfix.boundary_targets(good[None])
    with pytest.raises(ValueError, match="expected one of"):
        segfix.boundary_targets(good, num_directions=6)
    with pytest.raises(ValueError, match="found -3"):
        segfix.boundary_targets(np.full((4, 4), -3, np.int32))
    with pytest.raises(ValueError, match="border"):
        segfix.boundary_targets(good, border="reflect")
    with pytest.raises(ValueError, match="zero_gradient"):
        segfix.boundary_targets(good, zero_gradient="up")
    with pytest.raises(ValueError, match="max_distance"):
        segfix.boundary_targets(good, max_distance=-1)
    with pytest.raises(TypeError, match="numpy"):
        import torch

        segfix.boundary_targets(torch.zeros(4, 4, dtype=torch.long))
    # A negative ignore index is allowed.
    label = np.zeros((8, 8), np.int64)
    label[:, :2] = -1
    assert not segfix.boundary_targets(label, ignore_index=-1, min_pixels=0).boundary[:, :2].any()


@pytest.mark.data
def test_camvid_ground_truth_matches_reference(camvid):
    for path in sorted((camvid / "trainannot").glob("*.png"))[:3]:
        label = read_label(path)
        t = segfix.boundary_targets(label, ignore_index=11)
        ref = reference_targets(label, segments=semantic_segments(label, ignore_index=11), ignore_index=11)
        assert_matches_reference(t, ref, 8)


def test_segment_depth_is_the_per_segment_distance_transform():
    from scipy import ndimage

    from segfix.ops.targets import segment_depth

    rng = np.random.default_rng(11)
    label = rng.integers(0, 4, (6, 9)).repeat(4, 0).repeat(3, 1)
    label[:5, :5] = 255
    expected = sum(ndimage.distance_transform_edt(label == v) for v in (0, 1, 2, 3))
    np.testing.assert_allclose(segment_depth(label, lambda values: values != 255), expected, rtol=0, atol=1e-12)
    assert (segment_depth(label, lambda values: values != 255)[:5, :5] == 0).all()
