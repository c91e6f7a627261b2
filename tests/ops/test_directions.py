"""Direction binning, the (dy, dx) table, flips and direction_to_offset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segfix


def test_eight_direction_table_and_bins():
    table = segfix.direction_vectors(8)
    np.testing.assert_array_equal(table, [[0, -1], [-1, -1], [-1, 0], [-1, 1], [0, 1], [1, 1], [1, 0], [1, -1]])
    # Bin centres map to their class; edges (c + 22.5] belong to the lower class.
    angles = np.array([-180, -135, -90, -45, 0, 45, 90, 135, 180, -157.5, -157.4999, 22.5, 22.5001, 157.5, 157.51])
    expected = [0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 1, 4, 5, 7, 0]
    np.testing.assert_array_equal(segfix.angle_to_direction(angles, 8), expected)


def test_bins_agree_with_vectors():
    """Each bin's vector is the rounded direction of its centre, scaled to the table's length."""
    for m in (8, 16):
        centres = -180 + np.arange(m) * 360 / m
        classes = segfix.angle_to_direction(centres, m)
        np.testing.assert_array_equal(classes, np.arange(m))
        vectors = segfix.direction_vectors(m).astype(float)
        angle_of_vector = np.degrees(np.arctan2(vectors[:, 0], vectors[:, 1]))
        diff = (angle_of_vector - centres + 180) % 360 - 180
        assert np.abs(diff).max() < 360 / m / 2 + 5  # within the bin (16: perimeter vectors are approximate)


def test_four_directions_are_diagonal_quadrants():
    np.testing.assert_array_equal(segfix.direction_vectors(4), [[-1, -1], [-1, 1], [1, 1], [1, -1]])
    np.testing.assert_array_equal(
        segfix.angle_to_direction([-180, -135, -90, -1, 0, 45, 90, 179, 180], 4), [0, 0, 1, 1, 2, 2, 3, 3, 0]
    )


@pytest.mark.parametrize("m", [4, 8, 16])
def test_flip_is_an_involution_that_mirrors_vectors(m):
    d = np.arange(-1, m)
    for axis, sign in (("horizontal", (1, -1)), ("vertical", (-1, 1))):
        flipped = segfix.flip_direction(d, m, axis=axis)
        np.testing.assert_array_equal(segfix.flip_direction(flipped, m, axis=axis), d)
        assert flipped[0] == -1
        table = segfix.direction_vectors(m)
        np.testing.assert_array_equal(table[flipped[1:]], table * np.array(sign))
        t = segfix.flip_direction(torch.from_numpy(d), m, axis=axis)
        np.testing.assert_array_equal(t.numpy(), flipped)


def test_flip_matches_targets_of_flipped_map():
    from helpers import voronoi_labels

    label = voronoi_labels((40, 50), 12, 4, seed=1)
    t = segfix.boundary_targets(label, min_pixels=0, border="replicate", zero_gradient="no_direction")
    tf = segfix.boundary_targets(label[:, ::-1].copy(), min_pixels=0, border="replicate", zero_gradient="no_direction")
    flipped = segfix.flip_direction(t.direction, 8)[:, ::-1]
    # Equal except where the angle sits on a bin edge (the flip maps (c-22.5, c+22.5] to [c'-22.5, c'+22.5)).
    on_edge = np.isclose((t.angle + 22.5) % 45, 0, atol=1e-4) | np.isclose((t.angle + 22.5) % 45, 45, atol=1e-4)
    agree = (flipped == tf.direction) | on_edge[:, ::-1]
    assert agree.all()


def test_direction_to_offset_values_and_shapes(device):
    direction = torch.tensor([[0, 1, 2], [5, -1, 7]], device=device)
    boundary = torch.tensor([[True, True, False], [True, True, True]], device=device)
    off = segfix.direction_to_offset(direction, boundary)
    assert off.shape == (2, 2, 3) and off.dtype == torch.int8 and off.device.type == device.type
    np.testing.assert_array_equal(off[0].cpu(), [[0, -1, 0], [1, 0, 1]])  # dy
    np.testing.assert_array_equal(off[1].cpu(), [[-1, -1, 0], [1, 0, -1]])  # dx
    batched = segfix.direction_to_offset(
        direction[None].repeat(3, 1, 1).cpu().numpy(), boundary[None].repeat(3, 1, 1).cpu().numpy()
    )
    assert batched.shape == (3, 2, 2, 3) and batched.dtype == np.int8
    np.testing.assert_array_equal(batched[1], off.cpu().numpy())


def test_direction_to_offset_sixteen():
    d = np.arange(16).reshape(4, 4)
    off = segfix.direction_to_offset(d, np.ones_like(d, bool), num_directions=16)
    np.testing.assert_array_equal(off.reshape(2, 16).T, segfix.direction_vectors(16))


def test_direction_to_offset_errors():
    d = np.zeros((3, 3), np.int64)
    b = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="expected one of"):
        segfix.direction_to_offset(d, b, num_directions=32)
    with pytest.raises(TypeError, match="direction: expected an integer dtype"):
        segfix.direction_to_offset(d.astype(float), b)
    with pytest.raises(ValueError, match="boundary: expected the shape"):
        segfix.direction_to_offset(d, b[:2])
    with pytest.raises(ValueError, match=r"classes in 0..7"):
        segfix.direction_to_offset(d + 8, b)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\)"):
        segfix.direction_to_offset(d[None, None], b[None, None])
    with pytest.raises(TypeError, match="must both be numpy or both torch"):
        segfix.direction_to_offset(torch.from_numpy(d), b)
