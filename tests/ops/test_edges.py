"""How far a pixel lies from another label, and the refinement limit built on it (``max_edge_distance``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

import segfix
from helpers import noise_and_blob_maps
from segfix.ops.field import RefinementField, apply_field, apply_field_to_instances, freeze_by_label_map


def scipy_far(labels: np.ndarray, radius: int) -> np.ndarray:
    """Reference: the square of side 2r+1 (the border replicated) holds one label: its max equals its min."""
    size = 2 * radius + 1
    return ndimage.maximum_filter(labels, size, mode="nearest") == ndimage.minimum_filter(labels, size, mode="nearest")


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_far_from_edges_matches_scipy_filters(radius):
    for labels in noise_and_blob_maps(radius, 4, blob_size=5):  # blobs: most pixels far from an edge
        np.testing.assert_array_equal(segfix.far_from_edges(labels, radius), scipy_far(labels, radius))


def test_batches_tensors_and_dtypes_agree_with_one_map_at_a_time():
    rng = np.random.default_rng(3)
    labels = ndimage.median_filter(rng.integers(0, 3, (2, 30, 33)), (1, 5, 5)).astype(np.uint16)
    labels[0, :4] = 255  # the ignore label is just another value here
    far = segfix.far_from_edges(labels, 2)
    assert far.dtype == bool and far.shape == labels.shape
    for i in range(2):
        np.testing.assert_array_equal(far[i], scipy_far(labels[i].astype(np.int64), 2))
    on_tensor = segfix.far_from_edges(torch.from_numpy(labels), 2)  # uint16 tensors have no comparisons of their own
    assert on_tensor.dtype == torch.bool
    np.testing.assert_array_equal(on_tensor.numpy(), far)


@pytest.mark.parametrize("offset", [0, -1, 250, 10**6])
def test_labels_beyond_a_byte_or_below_zero_compare_as_themselves(offset):
    """Maps whose values fit a byte are compared as bytes (faster); others as they are, and give the same mask as
    scipy: with an ignore value of -1 beside ids 250..256, a byte would make -1 and 255 one label."""
    labels = ndimage.median_filter(np.random.default_rng(4).integers(0, 7, (30, 40)), 5).astype(np.int64) + offset
    labels[0, :5] = -1
    for radius in (1, 2):
        expected = scipy_far(labels, radius)
        np.testing.assert_array_equal(segfix.far_from_edges(labels, radius), expected)
        np.testing.assert_array_equal(segfix.far_from_edges(torch.from_numpy(labels), radius).numpy(), expected)
    assert segfix.far_from_edges(np.zeros((0, 5), np.int64), 1).shape == (0, 5)


def test_far_from_edges_refuses_what_it_cannot_read():
    with pytest.raises(TypeError, match="integer dtype"):
        segfix.far_from_edges(np.zeros((3, 3), np.float32), 1)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\)"):
        segfix.far_from_edges(np.zeros(3, np.int64), 1)
    with pytest.raises(ValueError, match="radius"):
        segfix.far_from_edges(np.zeros((3, 3), np.int64), 0)


def rightward_field(shape: tuple[int, int], **settings) -> RefinementField:
    """Every pixel moves and all its direction probability points right (direction 4 = (0, +1))."""
    moving = np.ones((1, *shape), bool)
    offsets = np.zeros((1, 2, *shape), np.int8)
    offsets[:, 1] = 1
    prob = np.zeros((moving.sum(), 8), np.float32)
    prob[:, 4] = 1.0
    return RefinementField(moving, offsets, prob, scale=1, **settings)


@pytest.mark.parametrize("vote", [False, True])
def test_labels_travel_no_farther_from_the_map_s_edges_than_the_limit(vote):
    """A segment of 1s on the right, every pixel taking its right neighbour's label for six steps: without a
    limit the 1s reach six pixels into the 0s; with ``max_edge_distance=2`` only the pixels that had a 1 within
    two pixels change (columns 5 and 6), by hand."""
    labels = np.zeros((3, 10), np.int64)
    labels[:, 7:] = 1
    field = rightward_field(labels.shape, iterations=6, direction_vote=vote)
    np.testing.assert_array_equal(apply_field(field, labels)[0], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    limited = apply_field(dataclasses.replace(field, max_edge_distance=2), labels)
    np.testing.assert_array_equal(limited, np.broadcast_to([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], labels.shape))
    assert (limited == np.where(scipy_far(labels, 2), labels, apply_field(field, labels))).all()


def test_the_limit_reads_the_map_given_so_steps_one_by_one_equal_all_at_once():
    labels = np.zeros((2, 12), np.int64)
    labels[:, 9:] = 1
    field = rightward_field(labels.shape, iterations=1, direction_vote=True, max_edge_distance=2)
    spent = freeze_by_label_map(field.with_steps(iterations=5), labels)
    assert spent.max_edge_distance == 0 and spent.thin_guard == 0
    stepped = labels
    for _ in range(5):
        stepped = apply_field(spent.with_steps(iterations=1), stepped)
    np.testing.assert_array_equal(stepped, apply_field(field.with_steps(iterations=5), labels))
    # stepping the unspent field re-reads the half-refined map each time: the 1s walk on, two pixels a step
    walked = labels
    for _ in range(5):
        walked = apply_field(field, walked)
    assert (walked != stepped).any()


def test_numpy_and_torch_labels_refine_alike_and_instances_ignore_the_limit():
    rng = np.random.default_rng(8)
    labels = ndimage.median_filter(rng.integers(0, 4, (20, 24)), 5)
    field = rightward_field(labels.shape, iterations=4, direction_vote=True, max_edge_distance=1)
    expected = apply_field(field, labels)
    np.testing.assert_array_equal(apply_field(field.to("cpu"), torch.from_numpy(labels)).numpy(), expected)
    assert (expected[scipy_far(labels, 1)] == labels[scipy_far(labels, 1)]).all()
    masks = labels[None] == np.arange(4)[:, None, None]
    unlimited = dataclasses.replace(field, max_edge_distance=0)
    np.testing.assert_array_equal(apply_field_to_instances(field, masks), apply_field_to_instances(unlimited, masks))


@pytest.mark.parametrize("bad", [-1, 17, 1.5, True])
def test_a_limit_out_of_range_is_refused_by_name(bad):
    with pytest.raises((TypeError, ValueError), match="max_edge_distance"):
        rightward_field((3, 3), max_edge_distance=bad)
    with pytest.raises((TypeError, ValueError), match="max_edge_distance"):
        segfix.DecisionSettings(max_edge_distance=bad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_the_gpu_the_mask_and_the_refined_map_are_the_cpu_s():
    rng = np.random.default_rng(9)
    labels = ndimage.median_filter(rng.integers(0, 4, (2, 40, 50)), (1, 5, 5))
    on_gpu = segfix.far_from_edges(torch.from_numpy(labels).cuda(), 2)
    assert on_gpu.is_cuda
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), np.stack([scipy_far(one, 2) for one in labels]))
    field = rightward_field(labels.shape[1:], iterations=4, direction_vote=True, max_edge_distance=2)
    refined = apply_field(field.to("cuda"), torch.from_numpy(labels[0]).cuda())
    np.testing.assert_array_equal(refined.cpu().numpy(), apply_field(field, labels[0]))
