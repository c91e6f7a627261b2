"""refine_semantic and refine_instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segfix
from helpers import read_label, voronoi_labels


def shifted_prediction(truth: np.ndarray, pixels: int) -> np.ndarray:
    """A 'coarse prediction': every segment's edge moved by eroding each class a little into its neighbours."""
    coarse = truth.copy()
    coarse[:, pixels:] = truth[:, :-pixels]
    return coarse


def test_oracle_offsets_fix_a_displaced_edge():
    truth = np.zeros((32, 32), np.uint8)
    truth[:, 16:] = 1
    coarse = np.zeros_like(truth)
    coarse[:, 18:] = 1
    refined = segfix.refine_semantic(coarse, segfix.boundary_targets(truth).offsets())
    np.testing.assert_array_equal(refined, truth)


def test_oracle_improves_random_scenes():
    truth = voronoi_labels((96, 128), 30, 8, seed=11)
    coarse = shifted_prediction(truth, 2)
    offsets = segfix.boundary_targets(truth, min_pixels=0).offsets()
    refined = segfix.refine_semantic(coarse, offsets)
    assert (refined != truth).sum() < 0.5 * (coarse != truth).sum()
    assert set(np.unique(refined)) <= set(np.unique(coarse))


def test_boundary_and_direction_give_the_same_result(device):
    truth = voronoi_labels((40, 48), 10, 5, seed=3)
    coarse = shifted_prediction(truth, 1)
    t = segfix.boundary_targets(truth, min_pixels=0)
    a = segfix.refine_semantic(coarse, t.offsets())
    b = segfix.refine_semantic(coarse, boundary=t.boundary, direction=t.direction)
    np.testing.assert_array_equal(a, b)
    c = segfix.refine_semantic(
        torch.from_numpy(coarse).to(device),
        boundary=torch.from_numpy(t.boundary).to(device),
        direction=torch.from_numpy(t.direction).to(device),
    )
    assert c.device.type == device.type and c.dtype == torch.uint8
    np.testing.assert_array_equal(c.cpu().numpy(), a)


def test_ignore_is_never_moved_or_created():
    coarse = np.array([[1, 255, 2, 2]], np.uint8)
    offsets = np.zeros((2, 1, 4), np.int8)
    offsets[1, 0, 0] = 1  # pixel 0 would take the ignore label from pixel 1
    offsets[1, 0, 1] = 1  # the ignore pixel would take class 2
    refined = segfix.refine_semantic(coarse, offsets, scale=1)
    np.testing.assert_array_equal(refined, [[1, 255, 2, 2]])
    refined_none = segfix.refine_semantic(coarse, offsets, scale=1, ignore_index=None)
    np.testing.assert_array_equal(refined_none, [[255, 2, 2, 2]])


def test_semantic_batch_and_scale_iterations():
    truth = voronoi_labels((30, 30), 8, 4, seed=5)
    t = segfix.boundary_targets(truth, min_pixels=0)
    coarse = np.stack([shifted_prediction(truth, 1), shifted_prediction(truth, 2)])
    refined = segfix.refine_semantic(coarse, t.offsets(), scale=1, iterations=3)
    for i in range(2):
        np.testing.assert_array_equal(refined[i], segfix.shift_labels(coarse[i], t.offsets(), iterations=3))


def test_semantic_errors():
    labels = np.zeros((4, 4), np.uint8)
    offsets = np.zeros((2, 4, 4), np.int8)
    with pytest.raises(TypeError, match="integer dtype"):
        segfix.refine_semantic(labels.astype(float), offsets)
    with pytest.raises(ValueError, match="either offsets or boundary"):
        segfix.refine_semantic(labels, offsets, boundary=np.ones((4, 4), bool), direction=np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="both boundary and direction"):
        segfix.refine_semantic(labels, boundary=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="found -2"):
        segfix.refine_semantic(np.full((4, 4), -2, np.int32), offsets)
    with pytest.raises(ValueError, match="offsets: expected shape"):
        segfix.refine_semantic(labels, offsets[:, :3])


def test_instances_shift_each_mask_with_the_same_field(device):
    rng = np.random.default_rng(0)
    masks = rng.random((3, 20, 24)) < 0.3
    offsets = rng.integers(-1, 2, (2, 20, 24)).astype(np.int8)
    refined = segfix.refine_instances(masks, offsets)
    assert refined.dtype == bool and refined.shape == masks.shape
    for k in range(3):
        np.testing.assert_array_equal(refined[k], segfix.shift_labels(masks[k], offsets))
    as_torch = segfix.refine_instances(
        torch.from_numpy(masks.astype(np.uint8)).to(device), torch.from_numpy(offsets).to(device)
    )
    assert as_torch.dtype == torch.uint8
    np.testing.assert_array_equal(as_torch.cpu().numpy(), refined)


def test_instances_resolve_overlaps_by_score():
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, :, :3] = 1
    masks[1, :, 1:] = 1
    masks[2, 0, 0] = 1
    zero = np.zeros((2, 4, 4), np.int8)
    out = segfix.refine_instances(masks, zero, scores=[0.2, 0.9, 0.5], resolve_overlaps=True)
    assert (out.sum(axis=0) <= 1).all()
    np.testing.assert_array_equal(out[1], masks[1])  # the best instance keeps everything
    np.testing.assert_array_equal(out[0], np.pad(np.ones((4, 1), np.uint8), ((0, 0), (0, 3))) * (1 - out[2]))
    assert out[2, 0, 0] == 1  # beats mask 0 (0.5 > 0.2)
    by_order = segfix.refine_instances(torch.from_numpy(masks), torch.from_numpy(zero), resolve_overlaps=True)
    np.testing.assert_array_equal(by_order[0].numpy(), masks[0])  # no scores: earlier masks win
    unresolved = segfix.refine_instances(masks, zero)
    np.testing.assert_array_equal(unresolved, masks)
    with pytest.raises(ValueError, match=r"scores: expected shape \(3,\)"):
        segfix.refine_instances(masks, zero, scores=[1.0], resolve_overlaps=True)
    with pytest.raises(ValueError, match="one field"):
        segfix.refine_instances(masks, np.zeros((3, 2, 4, 4), np.int8))
    assert segfix.refine_instances(masks[:0], zero).shape == (0, 4, 4)


@pytest.mark.data
def test_camvid_oracle_refinement_helps_espnet(camvid):
    """Offsets from ground truth (the paper's upper bound) must reduce ESPNet's errors on real val maps."""
    errors_before = errors_after = 0
    for path in sorted((camvid / "valannot").glob("*.png"))[:5]:
        truth = read_label(path)
        coarse = read_label(camvid / "val_espnet" / path.name)
        offsets = segfix.boundary_targets(truth, ignore_index=11).offsets()
        refined = segfix.refine_semantic(coarse, offsets, ignore_index=11)
        valid = truth != 11
        errors_before += ((coarse != truth) & valid).sum()
        errors_after += ((refined != truth) & valid).sum()
        assert set(np.unique(refined)) <= set(np.unique(coarse))
    assert errors_after < 0.9 * errors_before
